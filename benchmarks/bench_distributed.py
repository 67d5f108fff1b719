"""Cost of tracing a DDP job on every rank: the per-rank summaries, the comm hook, the store.

    python benchmarks/bench_distributed.py            # 2 CPU processes (gloo), an MLP
    python benchmarks/bench_distributed.py --quick    # fewer rounds, a smoke run

Launches itself under torchrun with two processes. In the same job, two DDP copies of the
same model train side by side, interleaved round by round (the order alternating):
- plain: DDP with its built-in all-reduce, no Tracer;
- traced: `tracer.init` + `tracer.watch(ddp_model, optimizer)` on both ranks (capture every
  optimizer step, the comm hook measuring each rank's own norm, summaries through the store
  every 64 steps) plus log + step.
`--variant no-comm-hook` watches the unwrapped module (synchronised norms, no DDP hook),
`--variant log-only` only logs and steps, `--no-system` switches the system sampler off: the
breakdown of where the cost goes. Rank 0 prints per-step figures (median, min-max of
per-round medians) and the ratio; both ranks run the same steps, so a rank waiting for the
other shows in both columns alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def launch(quick: bool, variant: str, system: bool) -> int:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master_port=29561", __file__, "--worker", "--variant", variant]
    if quick:
        command.append("--quick")
    if not system:
        command.append("--no-system")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env).returncode


VARIANTS = ("full", "no-comm-hook", "log-only")


def worker(quick: bool, variant: str, system: bool) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    import tracer

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rounds, steps = (4, 64) if quick else (12, 128)
    settings = {} if system else {"track_system_metrics": False}

    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(
            *(layer for _ in range(6) for layer in (nn.Linear(256, 256), nn.ReLU())),
            nn.Linear(256, 1),
        )
        ddp = nn.parallel.DistributedDataParallel(model)
        return ddp, torch.optim.SGD(ddp.parameters(), lr=1e-3)

    plain, plain_opt = make()
    traced, traced_opt = make()
    storage = tempfile.mkdtemp(prefix="bench-dist-") if rank == 0 else None
    storage_list = [storage]
    dist.broadcast_object_list(storage_list, src=0)
    tracer.init(project="bench", storage_path=str(Path(storage_list[0]) / ".tracer"), **settings)
    if variant == "full":
        tracer.watch(traced, traced_opt)
    elif variant == "no-comm-hook":  # the unwrapped module: synchronised norms, no DDP hook
        tracer.watch(traced.module, traced_opt)
    generator = torch.Generator().manual_seed(rank)
    batches = [torch.randn(64, 256, generator=generator) for _ in range(8)]

    def run(model: nn.Module, optimizer: torch.optim.Optimizer, log: bool) -> float:
        dist.barrier()
        start = time.perf_counter()
        for step in range(steps):
            loss = model(batches[step % len(batches)]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if log:
                tracer.log({"loss": loss.detach()})
                tracer.step()
        return (time.perf_counter() - start) / steps

    run(plain, plain_opt, False)  # warm-up of both paths
    run(traced, traced_opt, True)
    plain_times, traced_times = [], []
    for index in range(rounds):
        order = [(False, plain_times), (True, traced_times)]
        for log, times in order if index % 2 == 0 else order[::-1]:
            model, optimizer = (traced, traced_opt) if log else (plain, plain_opt)
            times.append(run(model, optimizer, log))
    tracer.finish()
    if rank == 0:
        base = statistics.median(plain_times)
        cost = statistics.median(traced_times)

        def figure(times: list[float]) -> str:
            low, high = min(times) * 1e3, max(times) * 1e3
            return f"{statistics.median(times) * 1e3:.3f} ms ({low:.3f}-{high:.3f}, n={rounds})"

        print(f"variant {variant}, system sampler {'on' if system else 'off'}")
        print("| per optimizer step, 2 ranks (gloo, CPU) | value |")
        print("|---|---|")
        print(f"| plain DDP | {figure(plain_times)} |")
        print(f"| traced on both ranks | {figure(traced_times)} |")
        print(f"| ratio traced / plain | {cost / base:.3f} |")
        print(f"| added per step | {(cost - base) * 1e6:.0f} us |")
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant", choices=VARIANTS, default="full")
    parser.add_argument("--no-system", action="store_true", help="track_system_metrics=False")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.quick, args.variant, not args.no_system)
    else:
        sys.exit(launch(args.quick, args.variant, not args.no_system))
