"""Gradient tracking overhead on a CPU MLP: none, Tracer, wandb.watch, a seed-style hook.

Every column trains its own copy of the same MLP (same seed, same batch), all alive in one
process, watched once for the whole benchmark; the columns take turns in blocks of steps,
the order rotating round by round (interleaved, so slow drifts of load hit all alike):
- none: the training step alone;
- Tracer: `tracer.watch(model, optimizer)` (capture every optimizer step) + log(loss) + step;
- wandb.watch(log_freq=1) and (log_freq=100): `run.watch(model, log="gradients", log_freq=N)`
  (gradient histograms every N backward passes) + `run.log({"loss": ...})`, offline;
- seed-style: a hook per parameter computing eight statistics with `.item()` each.
A figure is the mean time per step of a block of a multiple of 100 steps, so that
log_freq=100 pays its histogram steps in every block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from common import interleave, new_dir, progress


def seed_style_hooks(model: Any) -> list[Any]:
    """The seed reference's capture: per parameter, eight statistics read with `.item()`."""
    kept: dict[str, dict[str, float]] = {}

    def hook_for(name: str) -> Callable[[Any], None]:
        def hook(grad: Any) -> None:
            g = grad.detach().float()
            kept[name] = {
                "norm": g.norm().item(),
                "mean": g.mean().item(),
                "std": g.std().item(),
                "min": g.min().item(),
                "max": g.max().item(),
                "zeros": (g == 0).sum().item(),
                "nans": g.isnan().sum().item(),
                "infs": g.isinf().sum().item(),
            }

        return hook

    return [p.register_hook(hook_for(n)) for n, p in model.named_parameters() if p.requires_grad]


class Mlp:
    """One column's model, optimizer and batch, and what it does after each step."""

    def __init__(self, width: int) -> None:
        import torch
        from torch import nn

        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(128, width), nn.GELU()]
        for _ in range(6):
            layers += [nn.Linear(width, width), nn.GELU()]
        self.model = nn.Sequential(*layers, nn.Linear(width, 10))
        self.inputs, self.labels = torch.randn(64, 128), torch.randint(0, 10, (64,))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.loss_fn = nn.functional.cross_entropy
        self.after_step: Callable[[Any], None] = lambda loss: None

    def train_step(self) -> Any:
        loss = self.loss_fn(self.model(self.inputs), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def mean_step_s(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.after_step(self.train_step())
        return (time.perf_counter() - start) / steps


def bench_gradients(
    width: int, steps: int, rounds: int, scratch: Path, with_wandb: bool
) -> tuple[dict[str, list[float]], int]:
    import torch

    import tracer

    torch.set_num_threads(1)  # two cores, shared: intra-op threads would make it all noise
    columns = {"none": Mlp(width), "tracer": Mlp(width)}
    parameters = sum(p.numel() for p in columns["none"].model.parameters())
    progress(f"gradients: MLP {parameters:,} parameters, {rounds} rounds x {steps} steps/column")

    tracer.init(project="peers-grad", storage_path=str(new_dir(scratch, "tracer-grad-")))
    tracer.watch(columns["tracer"].model, optimizer=columns["tracer"].optimizer)

    def traced(loss: Any) -> None:
        tracer.log({"loss": loss})
        tracer.step()

    columns["tracer"].after_step = traced
    run: Any = None
    if with_wandb:
        import wandb

        run = wandb.init(project="peers-grad", dir=str(new_dir(scratch, "wandb-grad-")))
        for log_freq in (1, 100):
            watched = columns[f"wandb{log_freq}"] = Mlp(width)
            run.watch(watched.model, log="gradients", log_freq=log_freq)
            watched.after_step = lambda loss: run.log({"loss": loss.item()})
    columns["seed"] = Mlp(width)
    seed_style_hooks(columns["seed"].model)
    try:
        for column in columns.values():
            column.mean_step_s(3)  # warm-up; Tracer's first capture allocates its buffers
        blocks = {name: partial(column.mean_step_s, steps) for name, column in columns.items()}
        return interleave(blocks, rounds), parameters
    finally:
        tracer.finish()
        if run is not None:
            run.finish()
