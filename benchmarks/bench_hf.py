"""Cost of `TransformersCallback` per training step of a real `transformers.Trainer` (CPU).

    python benchmarks/bench_hf.py             # 5 rounds x 60 optimizer steps per variant
    python benchmarks/bench_hf.py --quick     # 2 rounds x 15 steps, a smoke run

Three variants of the same training, measured in the same process and interleaved round by
round (the order rotating), each round on a freshly built model with the same seed:
- without: the Trainer alone;
- with: the Trainer plus `TransformersCallback(project=...)` with its default settings
  (gradient capture every optimizer step, system sampler, asynchronous writes);
- no-grad: the same with `track_gradients=False`, to tell the capture's share of the cost.
The model is a tiny GPT-2 built from a config (2 layers, width 64, vocabulary 256), on
synthetic token sequences, so the step is short and Tracer's share of it is as large as it
gets on CPU; a real model's step is far longer and the share smaller.

A step's time is the interval between consecutive `on_step_end` events of a timing callback
registered last: the whole cycle (data, forward, backward, clipping, optimizer, every
callback, HF's logging) of one optimizer step. Per round the median over its steps (the first
`WARMUP_STEPS` dropped); the table shows the median of the rounds (min-max, n=rounds).
Tracer's one-time costs, its `on_train_begin` (create the run, watch the model) and its
`on_train_end` (finish: flush, write the end), are timed between two marker callbacks placed
before and after it. The table (markdown) goes to stdout, progress to stderr; the storage
goes to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Optional

import torch
import transformers
from adapter_costs import print_costs  # the table both adapter benchmarks print
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tracer_hf import TransformersCallback

VOCAB = 256
SEQ_LEN = 32
WARMUP_STEPS = 3


class TokenDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, VOCAB, (size, SEQ_LEN), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


class Marker(TrainerCallback):
    """Timestamps of the events it sees; the last one placed also times each step."""

    def __init__(self) -> None:
        self.train_begin = 0.0
        self.train_end = 0.0
        self.step_ends: list[float] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.train_begin = time.perf_counter()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.train_end = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.step_ends.append(time.perf_counter())


def tiny_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ_LEN,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


# variant -> Tracer settings (None: no Tracer callback)
VARIANTS: dict[str, Optional[dict[str, Any]]] = {
    "without": None,
    "with": {},
    "no-grad": {"track_gradients": False},
}


def run_once(
    steps: int,
    accumulation: int,
    logging_steps: int,
    settings: Optional[dict[str, Any]],
    workdir: str,
) -> dict[str, float]:
    """One training of `steps` optimizer steps; with Tracer's callback (these settings,
    storage in `workdir`) unless `settings` is None."""
    before, after = Marker(), Marker()
    callbacks: list[TrainerCallback] = [before]
    if settings is not None:
        storage = os.path.join(workdir, "store")
        callbacks.append(TransformersCallback(project="bench-hf", storage_path=storage, **settings))
    callbacks.append(after)
    args = TrainingArguments(
        output_dir=os.path.join(workdir, "out"),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        max_steps=steps,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=1.0,
        logging_steps=logging_steps,
        eval_strategy="no",
        save_strategy="no",
        seed=0,
    )
    trainer = Trainer(
        model=tiny_model(),
        args=args,
        train_dataset=TokenDataset(512),
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    ends = after.step_ends
    intervals = [b - a for a, b in itertools.pairwise(ends)]
    return {
        "step_ms": statistics.median(intervals[WARMUP_STEPS:]) * 1e3,
        "begin_ms": (after.train_begin - before.train_begin) * 1e3,
        "end_ms": (after.train_end - before.train_end) * 1e3,
        "wall_s": wall,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds x 15 steps")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant (5)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per round (60)")
    parser.add_argument("--accumulation", type=int, default=1, help="gradient accumulation (1)")
    parser.add_argument("--logging-steps", type=int, default=10, help="HF logging_steps (10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    options = parser.parse_args(argv)
    rounds = options.rounds or (2 if options.quick else 5)
    steps = options.steps or (15 if options.quick else 60)
    if steps <= WARMUP_STEPS + 2:
        parser.error(f"--steps must be more than {WARMUP_STEPS + 2}")

    torch.set_num_threads(options.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    logging.getLogger("tracer").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    names = list(VARIANTS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with (
        tempfile.TemporaryDirectory(prefix="bench-hf-") as workdir,
        contextlib.redirect_stdout(sys.stderr),  # HF prints its logs dicts
    ):
        for name in names:  # warm-up: imports, first-call costs
            run_once(WARMUP_STEPS + 3, options.accumulation, 1, VARIANTS[name], workdir)
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                figures = run_once(
                    steps, options.accumulation, options.logging_steps, VARIANTS[name], workdir
                )
                results[name].append(figures)
                print(
                    f"round {index + 1}/{rounds} {name:>8}: {figures['step_ms']:.2f} ms/step,"
                    f" train() {figures['wall_s']:.2f} s"
                )

    print(
        f"transformers {transformers.__version__}, torch {torch.__version__},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs, torch threads"
        f" {options.threads}; tiny GPT-2 (2 layers x 64, vocab {VOCAB}, seq {SEQ_LEN}),"
        f" batch 8, accumulation {options.accumulation}, logging_steps"
        f" {options.logging_steps}; {rounds} interleaved rounds x {steps} optimizer steps per"
        " variant; figures: median (min to max, n=rounds) of the per-round medians.\n"
    )
    print_costs(
        results,
        f"trainer.train() wall, {steps} steps",
        (
            ("on_train_begin (run created, model watched)", "begin_ms"),
            ("on_train_end (finish: flush, end of run)", "end_ms"),
        ),
        digits=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
