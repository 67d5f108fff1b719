"""An Accelerate DDP loop with `on_nonfinite="skip"`, run by tests/accelerate/test_skip.py under
torchrun (two CPU processes, gloo). argv: optimizer_steps nan_step. Rank 1's slice of the
batches of optimizer step `nan_step` holds a NaN; each rank writes rank-<r>.json with the
optimizer steps at which its weights did not change and its final weights.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from accelerate import Accelerator

import tracer_accelerate
from tests.accelerate.helpers import PROJECT, batch, loss_of, make_model, rank_slice
from tracer_accelerate import AccelerateTracker

ACCUMULATION = 2


def flat(model: torch.nn.Module) -> list[float]:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()


def main() -> None:
    steps, nan_step = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    tracker = AccelerateTracker(PROJECT, on_nonfinite="skip", track_system_metrics=False)
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=ACCUMULATION, log_with=[tracker]
    )
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT)
    tracer_accelerate.watch(accelerator, model, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    unchanged: list[int] = []
    weights = flat(model)
    completed = 0
    for micro in range(steps * ACCUMULATION):
        x, y = (rank_slice(t, rank, world) for t in batch(micro))
        if rank == 1 and micro // ACCUMULATION + 1 == nan_step:
            x = x.clone()
            x[0, 0] = float("nan")
        with accelerator.accumulate(model):
            accelerator.backward(loss_of(model, x, y))
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            completed += 1
            now = flat(model)
            if now == weights:
                unchanged.append(completed)
            weights = now
    with open(f"rank-{rank}.json", "w") as handle:
        json.dump({"world_size": world, "unchanged": unchanged, "weights": weights}, handle)
    accelerator.end_training()
    if torch.distributed.is_initialized():  # gloo's threads can abort an exit that skips this
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    # Everything the tests check is written (tracer finished, the process group destroyed).
    # Skip the interpreter's teardown: under load, gloo's threads sometimes abort it
    # ("terminate called without an active exception"), failing a job that did its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
