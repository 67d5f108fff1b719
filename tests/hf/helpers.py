"""A tiny real `transformers.Trainer` setup for the tracer-hf tests, and ways to read back.

Nothing is downloaded: the model is a 2-layer GPT-2 built from a config, the data synthetic
token sequences. Everything runs on CPU in about a second per training.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tracer.storage import RunRecord
from tracer_hf import TransformersCallback

VOCAB = 64
SEQ_LEN = 16
PROJECT = "hf"


class TokenDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """`size` fixed random token sequences (seeded), as language-modelling examples."""

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, VOCAB, (size, SEQ_LEN), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2 (about 30k parameters), the same weights for a given seed."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def training_args(output_dir: Path | str, **overrides: Any) -> TrainingArguments:
    """CPU, no reporting, no progress bars; accumulation 4, clipping, eval and saves every 4
    steps, logging every 2 steps, 12 optimizer steps (each setting can be overridden)."""
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "max_steps": 12,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "learning_rate": 1e-3,
        "max_grad_norm": 0.95,
        "logging_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "save_strategy": "steps",
        "save_steps": 4,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(
    output_dir: Path | str,
    callbacks: list[TrainerCallback],
    model: Optional[GPT2LMHeadModel] = None,
    **overrides: Any,
) -> Trainer:
    """A Trainer over `tiny_model()` and `TokenDataset`, with `training_args(**overrides)`."""
    return Trainer(
        model=model if model is not None else tiny_model(),
        args=training_args(output_dir, **overrides),
        train_dataset=TokenDataset(64),
        eval_dataset=TokenDataset(8, seed=1),
        callbacks=callbacks,
    )


def tracer_callback(**settings: Any) -> TransformersCallback:
    """`TransformersCallback` for project `PROJECT`, system sampling off (not under test)."""
    settings.setdefault("track_system_metrics", False)
    return TransformersCallback(project=PROJECT, **settings)


def grad_norm_of(model: torch.nn.Module) -> float:
    """sqrt(sum of squared per-parameter gradient norms), in float64: the global norm."""
    total = 0.0
    for param in model.parameters():
        if param.grad is not None:
            total += float(param.grad.double().norm()) ** 2
    return math.sqrt(total)


class ReferenceNorm(TrainerCallback):
    """Registered after Tracer's callback: the global gradient norm at the same event,
    `on_pre_optimizer_step` (after clipping), keyed by the step being trained."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        self.norms[state.global_step + 1] = grad_norm_of(model)


class RaiseAtStep(TrainerCallback):
    """Raises `RuntimeError` at the end of optimizer step `step` (as a bad batch would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == self.step:
            raise RuntimeError(f"boom at step {self.step}")


class StopAtStep(TrainerCallback):
    """Stops training cleanly at the end of step `step` (a job's time budget running out)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


class PoisonForwardAtStep(TrainerCallback):
    """Makes the logits NaN in every training micro-batch of optimizer step `step` (a global
    step, 1-based), through a forward hook on the output layer: the loss, then every gradient,
    become NaN there, and so do the weights after that optimizer step, as in a real divergence.
    """

    def __init__(self, model: GPT2LMHeadModel, step: int) -> None:
        self.step = step
        self.armed = False
        self.poisoned_batches = 0
        model.get_output_embeddings().register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> Any:
        if self.armed and module.training:
            self.poisoned_batches += 1
            return output * float("nan")
        return None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.armed = state.global_step + 1 == self.step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.armed = False


class CrashForwardAtStep(TrainerCallback):
    """Makes the model's forward raise `RuntimeError` in the first micro-batch of optimizer
    step `step` (a global step, 1-based), through a forward pre-hook: a crash inside the
    training step itself, after `step - 1` completed optimizer steps."""

    def __init__(self, model: torch.nn.Module, step: int) -> None:
        self.step = step
        self.armed = False
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any) -> None:
        if self.armed and module.training:
            raise RuntimeError(f"forward failed in step {self.step}")

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.armed = state.global_step + 1 == self.step


OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated on CPU)"


class OutOfMemoryAbove(TrainerCallback):
    """Makes the model's forward raise the `RuntimeError` a CUDA allocator raises when out of
    memory, for training batches of more than `max_batch` examples, from optimizer step
    `from_step` on: what `auto_find_batch_size` (accelerate's `find_executable_batch_size`,
    which matches the message) retries with a smaller batch. `batch_sizes` records the batch
    size of every training micro-batch that reached the forward."""

    def __init__(self, model: torch.nn.Module, max_batch: int, from_step: int = 1) -> None:
        self.max_batch = max_batch
        self.from_step = from_step
        self.step = 0
        self.batch_sizes: list[int] = []
        self.raised = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if not module.training:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        batch = int(input_ids.shape[0])
        self.batch_sizes.append(batch)
        if batch > self.max_batch and self.step >= self.from_step:
            self.raised += 1
            raise RuntimeError(OUT_OF_MEMORY)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.step = state.global_step + 1


def strictly_increasing(steps: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(steps))


def only_run(runs: list[RunRecord]) -> RunRecord:
    assert len(runs) == 1, [(r["run_id"], r["status"]) for r in runs]
    return runs[0]
