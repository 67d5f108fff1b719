"""`on_nonfinite="skip"` under torchrun, for tests/core/test_skip_distributed.py.

argv: steps. Two ranks train the same model on the same batches, without DDP: nothing averages
their gradients, so they stay equal only if they take the same decisions. Rank 1 alone gets a
NaN in a gradient at the steps of `BAD_STEPS`; rank 0's gradients stay finite, and only the
joint decision makes it skip too. `max_consecutive_skips` is 3, so the third skip in a row
stops both ranks. Each rank writes rank-<r>.json: the steps at which `optimizer.step()`
changed nothing, the step `TrainingHalted` was raised at, and its final weights.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

import tracer

FEATURES, BATCH, LR = 6, 8, 0.05
BAD_STEPS = (3, 6, 7, 8)  # on rank 1 only
MAX_CONSECUTIVE_SKIPS = 3


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(BATCH, FEATURES, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def weights(model: torch.nn.Module) -> list[float]:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()


def reference_weights(skipped: list[int], steps: int) -> list[float]:
    """One process, the same batches, no optimizer step at `skipped`: the weights both ranks
    must end with."""
    model = make_model()
    optimizer = make_optimizer(model)
    for step in range(steps):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if step not in skipped:
            optimizer.step()
        optimizer.zero_grad()
    return weights(model)


def main() -> None:
    steps = int(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = make_model()
    optimizer = make_optimizer(model)
    run = tracer.init(
        project="skip-distributed",
        on_nonfinite="skip",
        max_consecutive_skips=MAX_CONSECUTIVE_SKIPS,
        track_system_metrics=False,
    )
    tracer.watch(model, optimizer=optimizer)
    unchanged: list[int] = []
    halted_at = None
    for step in range(steps):
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if rank == 1 and step in BAD_STEPS:
            model[0].weight.grad[0, 0] = float("nan")
        before = weights(model)
        optimizer.step()
        if weights(model) == before:
            unchanged.append(step)
        optimizer.zero_grad()
        tracer.log({"loss": loss.detach()})
        try:
            tracer.step()
        except tracer.TrainingHalted:
            halted_at = step
            break
    tracer.finish()
    with open(f"rank-{rank}.json", "w") as handle:
        json.dump(
            {
                "is_writer": run.is_writer,
                "run_id": run.run_id,
                "unchanged": unchanged,
                "halted_at": halted_at,
                "weights": weights(model),
            },
            handle,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Everything the tests check is written (tracer finished, the process group destroyed).
    # Skip the interpreter's teardown: under load, gloo's threads sometimes abort it
    # ("terminate called without an active exception"), failing a job that did its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
