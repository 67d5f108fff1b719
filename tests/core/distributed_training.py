"""Plain-API distributed training for tests/core/test_distributed.py, run under torchrun.

argv: mode steps. Modes: "ddp" (every rank traces a DDP model), "fsdp" (every rank traces a
model sharded with fully_shard), "rank0" (only rank 0 calls tracer: the job must neither hang
nor wait), "halt" (DDP with halt_on, a NaN in rank 0's batch of step 10: every rank must stop
at the same step), "bypass" (DDP whose forward calls `trained.module(x)`, bypassing the wrapper:
no gradient all-reduce, the ranks' weights drift apart), "stages" (no DDP; rank 1 trains a
wider model, as a pipeline stage holds other parameters: its weights are not rank 0's
replica). Each rank takes its half of every batch. Writes rank-<r>.json with what it saw.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

import tracer

FEATURES, BATCH, LR = 6, 8, 0.05


def make_model(hidden: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )


def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(BATCH, FEATURES, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def reference_norms(steps: int) -> list[float]:
    """One process, whole batches: the global norm every data-parallel layout must report."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    norms = []
    for step in range(steps):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))
        optimizer.step()
        optimizer.zero_grad()
    return norms


def main() -> None:
    mode, steps = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model(32 if mode == "stages" and rank == 1 else 16)
    trained: torch.nn.Module
    if mode == "stages":
        trained = model
    elif mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in (model[0], model[2]):
            fully_shard(layer, mesh=mesh)
        trained = fully_shard(model, mesh=mesh)
    else:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=LR)
    traces = mode != "rank0" or rank == 0
    settings: dict[str, object] = {"checkpoint_interval": 3}
    if mode == "halt":
        settings |= {"halt_on": ["nan_or_inf"], "flush_interval": 0.05}
    run = tracer.init(project="distributed", **settings) if traces else None
    if traces:
        tracer.watch(trained, optimizer)
    rows = BATCH // world
    halted_at = None
    for step in range(steps):
        x, y = (t[rank * rows : (rank + 1) * rows] for t in batch(step))
        if mode == "halt" and rank == 0 and step == 10:
            x = x.clone()
            x[0, 0] = float("nan")
        forward = trained.module if mode == "bypass" else trained
        loss = torch.nn.functional.mse_loss(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if traces:
            tracer.log({"loss": loss.item()})
            try:
                tracer.step()
            except tracer.TrainingHalted:
                halted_at = step
                break
            if mode == "halt":
                time.sleep(0.01)  # let the writer thread judge the steps as they come
    if traces:
        tracer.finish()
    with open(f"rank-{rank}.json", "w") as handle:
        report = {"traced": traces, "world_size": world, "halted_at": halted_at}
        if run is not None:
            report |= {"is_writer": run.is_writer, "run_id": run.run_id}
        json.dump(report, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Everything the tests check is written (tracer finished, the process group destroyed).
    # Skip the interpreter's teardown: under load, gloo's threads sometimes abort it
    # ("terminate called without an active exception"), failing a job that did its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
