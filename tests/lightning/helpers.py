"""A tiny real Lightning setup for the tracer-lightning tests, in either namespace.

`lightning.pytorch` and `pytorch_lightning` are two copies of the same library with their own
classes: a Trainer of one namespace wants a LightningModule and callbacks of that namespace.
`module_class(ns)` builds a tiny MLP module class deriving from that namespace's
`LightningModule`; `make_trainer(ns, ...)` a CPU Trainer with no logger, bar or summary.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
from typing import Any, Optional

import torch

from tracer.storage import RunRecord
from tracer_lightning import LightningCallback

NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
PROJECT = "lightning"
FEATURES = 8


def namespace(ns: str) -> Any:
    return importlib.import_module(ns)


def dataset(size: int = 64, seed: int = 0) -> torch.utils.data.TensorDataset:
    """`size` fixed random regression examples (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(size, 1, generator=generator)
    return torch.utils.data.TensorDataset(x, y)


def loader(size: int = 64, seed: int = 0, batch_size: int = 4) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset(size, seed), batch_size=batch_size)


@functools.cache
def module_class(ns: str) -> type:
    """A tiny MLP `LightningModule` of namespace `ns`: logs `train_loss` every step,
    `val_loss` per validation epoch and `test_loss` per test epoch; `raise_at` / `nan_at` (an
    optimizer step, 1-based) make the training step raise, or its loss NaN, in the
    micro-batches of that step; `stop_after` stops the Trainer once that many optimizer steps
    are done."""
    pl = namespace(ns)

    class TinyModule(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(
            self,
            hidden: int = 16,
            lr: float = 0.05,
            raise_at: int = 0,
            nan_at: int = 0,
            stop_after: int = 0,
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            step = self.trainer.global_step + 1  # the optimizer step this batch is part of
            if step == self.hparams.raise_at:
                raise RuntimeError(f"boom at step {step}")
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            if step == self.hparams.nan_at:
                loss = loss * float("nan")
            self.log("train_loss", loss)
            return loss

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.hparams.stop_after and self.trainer.global_step >= self.hparams.stop_after:
                self.trainer.should_stop = True

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def test_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(8, seed=2)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(64)

        def val_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(8, seed=1)

    TinyModule.__qualname__ = TinyModule.__name__ = f"TinyModule_{ns.replace('.', '_')}"
    globals()[TinyModule.__name__] = TinyModule  # importable by name, so a Trainer pickles
    return TinyModule


def tiny_module(ns: str, **hparams: Any) -> Any:
    return module_class(ns)(**hparams)


def make_trainer(ns: str, callbacks: list[Any], **overrides: Any) -> Any:
    """A CPU Trainer of namespace `ns` (no logger, no progress bar, no summary, 12 steps)."""
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "max_steps": 12,
        "callbacks": callbacks,
        "default_root_dir": ".",
    }
    settings.update(overrides)
    return namespace(ns).Trainer(**settings)


def tracer_callback(**settings: Any) -> LightningCallback:
    """`LightningCallback` for project `PROJECT`, system sampling off (not under test)."""
    settings.setdefault("track_system_metrics", False)
    return LightningCallback(project=PROJECT, **settings)


def grad_norm_of(module: torch.nn.Module) -> float:
    """sqrt(sum of squared per-parameter gradient norms), in float64: the global norm."""
    total = 0.0
    for param in module.parameters():
        if param.grad is not None:
            total += float(param.grad.double().norm()) ** 2
    return math.sqrt(total)


@functools.cache
def reference_norm_class(ns: str) -> type:
    """A callback of namespace `ns` recording the global gradient norm at
    `on_before_optimizer_step` (unscaled, before clipping), keyed by the step being taken."""
    pl = namespace(ns)

    class ReferenceNorm(pl.Callback):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.norms: dict[int, float] = {}

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            self.norms[trainer.global_step + 1] = grad_norm_of(pl_module)

    return ReferenceNorm


def reference_norm(ns: str) -> Any:
    return reference_norm_class(ns)()


def strictly_increasing(steps: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(steps))


def only_run(runs: list[RunRecord], project: Optional[str] = None) -> RunRecord:
    assert len(runs) == 1, [(r["run_id"], r["status"]) for r in runs]
    if project is not None:
        assert runs[0]["project_name"] == project
    return runs[0]
