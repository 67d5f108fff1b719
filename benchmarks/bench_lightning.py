"""Cost of `LightningCallback` per training step of a real Lightning `Trainer` (CPU).

    python benchmarks/bench_lightning.py            # 5 rounds x 200 optimizer steps per variant
    python benchmarks/bench_lightning.py --quick    # 2 rounds x 40 steps, a smoke run

Three variants of the same training, measured in the same process and interleaved round by
round (the order rotating), each round on a freshly built model with the same seed:
- without: the Trainer alone (`logger=False`, no bar, no summary, no checkpointing);
- with: the same plus `LightningCallback(project=...)` with its default settings (gradient
  capture every optimizer step, system sampler, asynchronous writes);
- no-grad: the same with `track_gradients=False`, to tell the capture's share of the cost.
The model is a small MLP (64 -> 256 -> 256 -> 1) on synthetic data, batch 32, so the step is
short and Tracer's share of it is as large as it gets on CPU; a real model's step is longer.

A step's time is the interval between consecutive `on_train_batch_end` events of a timing
callback registered last (the whole cycle: data, forward, backward, optimizer, callbacks,
`self.log`). Per round the median over its steps (the first `WARMUP_STEPS` dropped); the
table shows the median of the rounds (min to max, n=rounds). The table (markdown) goes to
stdout, progress to stderr; the storage goes to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
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

import lightning
import lightning.pytorch as pl
import torch
from adapter_costs import print_costs  # the table both adapter benchmarks print

from tracer_lightning import LightningCallback

WARMUP_STEPS = 5
FEATURES = 64


class Mlp(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 1),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def data(size: int) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(size, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


class StepTimer(pl.Callback):
    """Timestamps of every `on_train_batch_end`, and of fit start and end."""

    def __init__(self) -> None:
        self.batch_ends: list[float] = []
        self.fit_start = 0.0
        self.fit_end = 0.0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.batch_ends.append(time.perf_counter())

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.fit_end = time.perf_counter()


def run_once(steps: int, settings: Optional[dict[str, Any]], workdir: str) -> dict[str, float]:
    """One fit of `steps` optimizer steps; the median step time (ms) and the fit's wall (s)."""
    timer = StepTimer()
    callbacks: list[Any] = []
    if settings is not None:
        callbacks.append(
            LightningCallback(project="bench", storage_path=f"{workdir}/.tracer", **settings)
        )
    callbacks.append(timer)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=workdir,
    )
    start = time.perf_counter()
    trainer.fit(Mlp(), train_dataloaders=data(32 * steps))
    wall = time.perf_counter() - start
    intervals = [b - a for a, b in itertools.pairwise(timer.batch_ends)][WARMUP_STEPS:]
    return {"step_ms": statistics.median(intervals) * 1000, "wall_s": wall}


VARIANTS: dict[str, Optional[dict[str, Any]]] = {
    "without": None,
    "with": {},
    "no-grad": {"track_gradients": False},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds x 40 steps")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    rounds, steps = (2, 40) if options.quick else (options.rounds, options.steps)
    if steps <= WARMUP_STEPS + 2:
        parser.error(f"--steps must be more than {WARMUP_STEPS + 2}")

    torch.set_num_threads(options.threads)
    for name in ("lightning.pytorch", "lightning.fabric", "tracer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    names = list(VARIANTS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-lightning-") as workdir:
        for name in names:  # warm-up: imports, first-call costs
            run_once(WARMUP_STEPS + 5, VARIANTS[name], workdir)
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                figures = run_once(steps, VARIANTS[name], workdir)
                results[name].append(figures)
                print(
                    f"round {index + 1}/{rounds} {name:>8}: {figures['step_ms']:.3f} ms/step,"
                    f" fit() {figures['wall_s']:.2f} s",
                    file=sys.stderr,
                )

    print(
        f"lightning {lightning.__version__}, torch {torch.__version__},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs, torch threads"
        f" {options.threads}; MLP {FEATURES}-256-256-1, batch 32; {rounds} interleaved rounds"
        f" x {steps} optimizer steps per variant; figures: median (min to max, n=rounds) of the"
        " per-round medians.\n"
    )
    print_costs(results, f"trainer.fit() wall, {steps} steps", (), digits=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
