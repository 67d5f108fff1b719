"""A tiny regression model and deterministic batches, the same in the test process, in
`accelerate launch` workers and in the single-process reference."""

from __future__ import annotations

from typing import Any

import torch

PROJECT = "accelerate-tests"
FEATURES = 6
BATCH = 8  # per optimizer micro-step, over all ranks together


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )


def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch `index` (all ranks' rows together), the same in every process."""
    generator = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(BATCH, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(BATCH, 1, generator=generator)
    return x, y


def rank_slice(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    rows = tensor.shape[0] // world_size
    return tensor[rank * rows : (rank + 1) * rows]


def loss_of(model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(model(x), y)


def reference_norms(optimizer_steps: int, accumulation: int, lr: float) -> list[float]:
    """Global gradient norm of each optimizer step, one process, whole batches: the value
    DDP over any number of equal shards must reproduce."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    norms = []
    for step in range(optimizer_steps):
        for micro in range(accumulation):
            x, y = batch(step * accumulation + micro)
            (loss_of(model, x, y) / accumulation).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        optimizer.step()
        optimizer.zero_grad()
    return norms


def reset_accelerate() -> None:
    """Forget Accelerate's process-wide singletons, as a new process would (each Accelerator
    of a test then starts from scratch)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
