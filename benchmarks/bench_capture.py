"""Cost of gradient capture per training step, beside no tracking and a seed-style hook.

    python benchmarks/bench_capture.py            # CPU: an MLP, runs in CI time
    python benchmarks/bench_capture.py --gpu      # CUDA: GPT-2-small shape, bf16, AdamW

Three columns, measured in the same process and interleaved round by round (median, min,
max of per-round medians):
- none: the training step alone;
- tracer: `tracer.watch(model, optimizer)`, capture every optimizer step, plus log + step
  (default settings: system sampler on, checkpoints every 1000 steps);
- seed-style: a hook per parameter computing eight statistics with `.item()` each, as the
  seed reference (LayerClaw) does.
A fourth figure is the system sampler's cost to the training thread: log + step with
`track_system_metrics` on (sampling every 0.1 s, 50x the default rate) against off.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import tracer


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
    def __init__(self, gpu: bool, quick: bool) -> None:
        torch.manual_seed(0)
        self.device = "cuda" if gpu else "cpu"
        if gpu:
            self.model: nn.Module = GPT().to(self.device)
            self.batch = (torch.randint(0, 50257, (8, 1024), device=self.device),)
            self.steps = 10 if quick else 30
        else:
            width = 256 if quick else 512
            layers = [nn.Linear(128, width), nn.GELU()]
            for _ in range(6):
                layers += [nn.Linear(width, width), nn.GELU()]
            self.model = nn.Sequential(*layers, nn.Linear(width, 10))
            self.batch = (torch.randn(64, 128), torch.randint(0, 10, (64,)))
            self.steps = 20 if quick else 60
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.gpu = gpu

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

    def time_steps(self, after_step: Callable[[torch.Tensor], None]) -> float:
        """Median seconds per step over `self.steps` steps (synchronized per step on GPU)."""
        times = []
        for _ in range(self.steps):
            self.sync()
            start = time.perf_counter()
            loss = self.train_step()
            after_step(loss)
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def measure_round(work: Workload, storage: str) -> dict[str, float]:
    figures = {"none": work.time_steps(lambda loss: None)}

    run = tracer.init(project="bench-capture", storage_path=storage, retention_days=0)
    tracer.watch(work.model, optimizer=work.optimizer)
    for _ in range(3):  # first capture allocates the ring buffer
        tracer.log({"loss": work.train_step()})
        tracer.step()

    def traced(loss: torch.Tensor) -> None:
        tracer.log({"loss": loss})
        tracer.step()

    figures["tracer"] = work.time_steps(traced)
    run.finish()

    handles = seed_style_hooks(work.model)
    figures["seed-style"] = work.time_steps(lambda loss: None)
    for handle in handles:
        handle.remove()
    return figures


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
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        print("--gpu needs a CUDA GPU; none is visible.", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Workload(args.gpu, args.quick)
    rounds = args.rounds or (3 if args.quick else 7)
    device = torch.cuda.get_device_name() if args.gpu else "CPU"
    print(
        f"Gradient capture cost per training step on {device}: torch {torch.__version__},"
        f" {sum(p.numel() for p in work.model.parameters()):,} parameters,"
        f" {rounds} interleaved rounds of {work.steps} steps"
    )
    with tempfile.TemporaryDirectory() as storage:
        for _ in range(2):
            work.train_step()  # warm-up
        results: dict[str, list[float]] = {"none": [], "tracer": [], "seed-style": []}
        for _ in range(rounds):
            for name, value in measure_round(work, storage).items():
                results[name].append(value)
        base = statistics.median(results["none"])
        print("\n| tracking | ms per step: median (min-max) | overhead vs none |")
        print("|---|---|---|")
        for name, values in results.items():
            overhead = (statistics.median(values) / base - 1) * 100
            print(f"| {name} | {summarize(values)} | {overhead:+.2f}% |")
        tracer_overhead = (statistics.median(results["tracer"]) / base - 1) * 100
        target = 1.0 if args.gpu else math.inf
        if args.gpu:
            verdict = "PASS" if tracer_overhead <= target else "FAIL"
            print(f"\nTarget (GPU): Tracer's every-step capture adds at most 1%: {verdict}")

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
