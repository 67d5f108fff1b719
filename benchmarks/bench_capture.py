"""Cost of gradient capture per training step, beside no tracking and other trackers.

    python benchmarks/bench_capture.py                 # CPU: an MLP, runs in CI time
    python benchmarks/bench_capture.py --gpu           # CUDA: GPT-2-small shape, bf16, AdamW
    python benchmarks/bench_capture.py --gpu --wandb   # + wandb.watch beside Tracer

Method: every column trains its own copy of the same model (same seed, same batch), all
alive in one process, and the columns take turns in blocks of steps, the order rotating
round by round. The figure per column and round is the mean time per step of its block,
timed from a device sync to a device sync (a real loop never syncs, so the GPU keeps a queue
and host-side work overlaps it); `--sync-each-step` syncs after every step instead, which
charges any host time that does not overlap. "added" is the median over rounds of the
column's block minus the none block of the same round: a paired difference, so slow drifts
of clock and load cancel.

Columns:
- none: the training step alone;
- tracer: `tracer.watch(model, optimizer)`, capture every optimizer step, plus log + step
  (default settings: system sampler on, checkpoints every 1000 steps), one run throughout;
- seed-style: a hook per parameter computing eight statistics with `.item()` each, as the
  seed reference (LayerClaw) does;
- tracer-fused (`--gpu` only): as tracer, with `fused_gradient_kernel=True` (the one-read
  Triton kernel; needs triton), watched by the same run as a second model;
- tracer-no-probe: as tracer, with the silent-bug probe off (`update_check_interval=0`),
  watched by the same run: tracer minus this column is what the probe costs.
`--wandb` (needs wandb, e.g. the pin in benchmarks/peers/requirements.txt) adds a second
table with `wandb.watch(model, log="gradients", log_freq=100)` and `log_freq=1`, offline,
in blocks of 100 steps, so that log_freq=100 pays its one histogram step in every block.
A last table is the system sampler's cost to the training thread: log + step with
`track_system_metrics` on (sampling every 0.1 s, 50x the default rate) against off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import tracer
from tracer.config import TracerConfig


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """GPT-2 small's shape (124M parameters with vocab 50257, 12 x 768, context 1024)."""

    def __init__(
        self,
        vocab: int = 50257,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        context: int = 1024,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def seed_style_hooks(model: nn.Module) -> list[Any]:
    """The seed reference's capture: per parameter, eight statistics read with `.item()`."""
    kept: dict[str, dict[str, float]] = {}

    def hook_for(name: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
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


class Workload:
    """One column's model, optimizer and batch; every copy starts from the same seed."""

    def __init__(self, gpu: bool, quick: bool) -> None:
        torch.manual_seed(0)
        self.device = "cuda" if gpu else "cpu"
        if gpu:
            self.model: nn.Module = GPT().to(self.device)
            self.batch: tuple[torch.Tensor, ...] = (
                torch.randint(0, 50257, (8, 1024), device=self.device),
            )
        else:
            width = 256 if quick else 512
            layers = [nn.Linear(128, width), nn.GELU()]
            for _ in range(6):
                layers += [nn.Linear(width, width), nn.GELU()]
            self.model = nn.Sequential(*layers, nn.Linear(width, 10))
            self.batch = (torch.randn(64, 128), torch.randint(0, 10, (64,)))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.gpu = gpu
        self.after_step: Callable[[torch.Tensor], None] = lambda loss: None

    def train_step(self) -> torch.Tensor:
        if self.gpu:
            (ids,) = self.batch
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = self.model(ids)
            loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
        else:
            inputs, labels = self.batch
            loss = nn.functional.cross_entropy(self.model(inputs), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize()

    def block(self, steps: int, sync_each_step: bool) -> float:
        """Mean seconds per step over `steps` steps, from a device sync to a device sync."""
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.after_step(self.train_step())
            if sync_each_step:
                self.sync()
        self.sync()
        return (time.perf_counter() - start) / steps


def traced_log(loss: torch.Tensor) -> None:
    tracer.log({"loss": loss})
    tracer.step()


def interleave(
    columns: dict[str, Workload], rounds: int, steps: int, sync_each_step: bool
) -> dict[str, list[float]]:
    """Per column, the mean step time of its block in each round; the order rotates."""
    names = list(columns)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(columns[name].block(steps, sync_each_step))
    return results


def print_table(results: dict[str, list[float]], labels: dict[str, str]) -> None:
    """Median (min-max) per column, and the paired added time against none."""
    base = results["none"]
    tracer_added = paired_added(results["tracer"], base)
    print("\n| tracking | ms per step: median (min-max) | added vs none, paired | / Tracer's |")
    print("|---|---|---|---|")
    for name, values in results.items():
        added = paired_added(values, base)
        ratio = "" if name in ("none", "tracer") else f"x{added / tracer_added:.3g}"
        percent = added / statistics.median(base) * 100
        print(
            f"| {labels.get(name, name)} | {summarize(values)} |"
            f" {added * 1e3:+.3f} ms ({percent:+.2f}%) | {ratio} |"
        )


def print_fused_verdict(results: dict[str, list[float]]) -> None:
    """The fused column against the foreach one, and whether it really ran fused."""
    from tracer.capture.gradients import fused

    if fused._failure is not None:
        print(f"tracer-fused fell back to the foreach kernels: {fused._failure}")
        return
    base = statistics.median(results["none"])
    added = paired_added(results["tracer-fused"], results["none"]) / base * 100
    foreach = paired_added(results["tracer"], results["none"]) / base * 100
    verdict = "PASS" if added <= 1.0 else "FAIL"
    print(
        f"Fused kernel: +{added:.2f}% against foreach +{foreach:.2f}% per step;"
        f" at most 1%: {verdict}"
    )


def paired_added(values: list[float], base: list[float]) -> float:
    return statistics.median(v - b for v, b in zip(values, base, strict=True))


WANDB_BLOCK_STEPS = 100


def compare_with_wandb(
    columns: dict[str, Workload], make: Callable[[], Workload], storage: str, rounds: int
) -> None:
    """The `--wandb` table: none and Tracer again, beside wandb.watch(log_freq=100 and 1)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")
    import wandb

    wandb_dir = os.path.join(storage, "wandb")
    os.makedirs(wandb_dir, exist_ok=True)
    wandb_run = wandb.init(project="bench-capture", dir=wandb_dir, mode="offline")
    watched = {"none": columns["none"], "tracer": columns["tracer"]}
    for log_freq in (100, 1):
        work = make()
        wandb_run.watch(work.model, log="gradients", log_freq=log_freq)
        # wandb.log reads the loss on the host, as its users do.
        work.after_step = lambda loss: wandb_run.log({"loss": loss.item()})
        watched[f"wandb{log_freq}"] = work
    try:
        for work in watched.values():
            work.block(3, sync_each_step=False)  # warm-up: wandb's first histograms
        results = interleave(watched, rounds, WANDB_BLOCK_STEPS, sync_each_step=False)
    finally:
        wandb_run.finish()
    print(
        f"\nBeside wandb {wandb.__version__} (offline): blocks of {WANDB_BLOCK_STEPS} steps,"
        f" {rounds} interleaved rounds"
    )
    print_table(
        results,
        {
            "tracer": "Tracer, every step",
            "wandb100": "wandb.watch(log_freq=100)",
            "wandb1": "wandb.watch(log_freq=1)",
        },
    )
    per_round = [w / t for w, t in zip(results["wandb100"], results["tracer"], strict=True)]
    verdict = "PASS" if statistics.median(per_round) > 1 else "FAIL"
    print(
        "\nTarget: Tracer's every-step capture costs less than wandb.watch(log_freq=100):"
        f" step time wandb/Tracer per round median x{statistics.median(per_round):.3f}"
        f" ({min(per_round):.3f}-{max(per_round):.3f}): {verdict}"
    )


def sampler_cost(storage: str, steps: int) -> dict[str, float]:
    """Training-thread CPU time per log+step, system sampler on (every 0.1 s) vs off."""
    figures = {}
    for label, enabled in (("sampler off", False), ("sampler on", True)):
        run = tracer.init(
            project="bench-sampler",
            storage_path=storage,
            retention_days=0,
            track_system_metrics=enabled,
            system_metrics_interval=0.1,
        )
        start = time.thread_time()
        wall = time.perf_counter()
        for step in range(steps):
            tracer.log({"loss": 1.0 / (step + 1), "lr": 1e-3})
            tracer.step()
            if step % 1000 == 0:
                time.sleep(0.01)  # let the sampler run as it would during real training
        figures[label] = (time.thread_time() - start) / steps
        figures[label + " wall"] = (time.perf_counter() - wall) / steps
        run.finish()
    return figures


def summarize(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e3:.3f} ms "
        f"({min(values) * 1e3:.3f}-{max(values) * 1e3:.3f}, n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPT-2-small shape on CUDA")
    parser.add_argument("--quick", action="store_true", help="a smoke run, ~10x shorter")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--block", type=int, default=10, help="steps per column per round")
    parser.add_argument(
        "--sync-each-step", action="store_true", help="sync the device after every step"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also wandb.watch(log_freq=100 and 1), offline"
    )
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        print("--gpu needs a CUDA GPU; none is visible.", file=sys.stderr)
        return 2
    rounds = args.rounds or (5 if args.quick else 20)

    def make() -> Workload:
        return Workload(args.gpu, args.quick)

    columns = {"none": make(), "tracer": make(), "tracer-no-probe": make(), "seed-style": make()}
    if args.gpu:
        columns["tracer-fused"] = make()
    device = torch.cuda.get_device_name() if args.gpu else "CPU"
    parameters = sum(p.numel() for p in columns["none"].model.parameters())
    timing = "synced after every step" if args.sync_each_step else "synced per block"
    print(
        f"Gradient capture cost per training step on {device}: torch {torch.__version__},"
        f" {parameters:,} parameters, {rounds} interleaved rounds of {args.block} steps"
        f" per column, {timing}"
    )
    with tempfile.TemporaryDirectory() as storage:
        run = tracer.init(project="bench-capture", storage_path=storage, retention_days=0)
        tracer.watch(columns["tracer"].model, optimizer=columns["tracer"].optimizer)
        columns["tracer"].after_step = traced_log
        run.config.update_check_interval = 0  # read at watch(): this model is not probed
        tracer.watch(
            columns["tracer-no-probe"].model, optimizer=columns["tracer-no-probe"].optimizer
        )
        columns["tracer-no-probe"].after_step = traced_log
        default_interval = TracerConfig.model_fields["update_check_interval"].default
        run.config.update_check_interval = default_interval
        if args.gpu:  # the setting is read at watch(): this model gets the fused kernel
            run.config.fused_gradient_kernel = True
            tracer.watch(columns["tracer-fused"].model, optimizer=columns["tracer-fused"].optimizer)
            columns["tracer-fused"].after_step = traced_log
        handles = seed_style_hooks(columns["seed-style"].model)
        for work in columns.values():
            work.block(3, sync_each_step=False)  # warm-up; Tracer allocates its ring buffer
        results = interleave(columns, rounds, args.block, args.sync_each_step)
        print_table(results, {})
        probe = paired_added(results["tracer"], results["tracer-no-probe"])
        print(
            f"\nSilent-bug probe (update_check_interval={run.config.update_check_interval}):"
            f" {probe * 1e6:+.1f} us per step"
            f" ({probe / statistics.median(results['none']) * 100:+.3f}% of the step)"
        )
        del columns["tracer-no-probe"]
        if args.gpu:
            added = paired_added(results["tracer"], results["none"])
            percent = added / statistics.median(results["none"]) * 100
            verdict = "PASS" if percent <= 1.0 else "FAIL"
            print(f"\nTarget (GPU): Tracer's every-step capture adds at most 1%: {verdict}")
            print_fused_verdict(results)
        columns.pop("tracer-fused", None)
        for handle in handles:
            handle.remove()
        del columns["seed-style"]

        if args.wandb:
            compare_with_wandb(columns, make, storage, rounds=2 if args.quick else 4)
        run.finish()

        sampler = sampler_cost(storage, 2_000 if args.quick else 20_000)
        print("\n| system sampler (every 0.1 s) | training-thread CPU per log+step | wall |")
        print("|---|---|---|")
        for label in ("sampler off", "sampler on"):
            print(
                f"| {label} | {sampler[label] * 1e6:.2f} us | "
                f"{sampler[label + ' wall'] * 1e6:.2f} us |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
