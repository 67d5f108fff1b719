"""An Accelerate training loop traced by Tracer, run by the tests under `accelerate launch`.

argv: optimizer_steps accumulation nan_rank nan_step [resume_dir save_dir]  (nan_rank -1: no
NaN; "-": no load_state / save_state). Each rank uses its slice of every micro-batch, so DDP's
averaged gradient equals the whole batch's. A resumed job continues with the micro-batches
after the checkpoint's, so two jobs together train what one uninterrupted job would.
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

LR = 0.05


def main() -> None:
    steps, accumulation, nan_rank, nan_step = (int(a) for a in sys.argv[1:5])
    resume_dir, save_dir = [*sys.argv[5:7], "-", "-"][:2]
    torch.set_num_threads(1)
    accelerator = Accelerator(
        cpu=True,
        gradient_accumulation_steps=accumulation,
        log_with=[AccelerateTracker(PROJECT, checkpoint_interval=4)],
    )
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT, config={"lr": LR, "accumulation": accumulation})
    tracer_accelerate.watch(accelerator, model, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    completed = 0
    if resume_dir != "-":
        accelerator.load_state(resume_dir)
        completed = int(resume_dir.rsplit("_", 1)[-1])  # the script's own count
    for micro in range(completed * accumulation, (completed + steps) * accumulation):
        x, y = (rank_slice(t, rank, world) for t in batch(micro))
        if rank == nan_rank and micro // accumulation + 1 == nan_step:
            x = x.clone()
            x[0, 0] = float("nan")  # this rank's batch goes bad
        with accelerator.accumulate(model):
            loss = loss_of(model, x, y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            completed += 1
            accelerator.log({"loss": loss.item(), "note": "text is skipped"}, step=completed)
    if save_dir != "-":
        accelerator.save_state(f"{save_dir}_{completed}")
    with open(f"rank-{rank}.json", "w") as handle:
        json.dump({"world_size": world, "distributed": str(accelerator.distributed_type)}, handle)
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
