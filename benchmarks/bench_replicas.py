"""Cost of the per-rank weight fingerprint (`rank_weight_check_interval`), beside the training
step it rides on.

    python benchmarks/bench_replicas.py            # CPU: bench_capture.py's MLP, a deep thin one
    python benchmarks/bench_replicas.py --quick    # fewer rounds, a smoke run
    python benchmarks/bench_replicas.py --gpu      # CUDA: GPT-2-small shape, bf16, AdamW

The fingerprint is taken on the training thread at one captured step in
`rank_weight_check_interval` (50 by default): a strided sample of each parameter, one `cat`
and one dot product per model, no host sync (its value goes to the host with the rank's block
of summary rows, on the writer thread, not measured here). In one process, interleaved round
by round (the order alternating): a block of training steps (forward, backward, AdamW step)
and a block of fingerprints of the same model (`WeightFingerprints.take`). On CUDA each block
is timed from a device sync to a device sync. Printed: the medians per step and per
fingerprint (min-max of the rounds), the fingerprint amortised over the default interval, and
that figure as a share of the step. No distributed job is needed: the fingerprint is the same
computation on every rank; what the transport costs is `bench_distributed.py`'s figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from bench_capture import GPT  # the same GPT-2-small-shaped model as the capture benchmark
from torch import nn

from tracer.capture.gradients.replicas import WeightFingerprints
from tracer.config import TracerConfig

INTERVAL = TracerConfig(project_name="bench").rank_weight_check_interval


def mlp_case(width: int, depth: int) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """Linear layers with GELU between them; 512 x 8 is bench_capture.py's CPU workload, 64 x
    100 is many small tensors (where the per-tensor work of the fingerprint shows most)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(128, width), nn.GELU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.GELU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    x, y = torch.randn(64, 128), torch.randint(0, 10, (64,))
    return model, lambda m: nn.functional.cross_entropy(m(x), y)


def gpt_case() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """GPT-2 small's shape on CUDA, bf16 autocast."""
    torch.manual_seed(0)
    vocab, context = 50257, 1024
    model = GPT(vocab, 768, 12, 12, context).to("cuda")
    ids = torch.randint(0, vocab, (8, context), device="cuda")

    def loss(m: nn.Module) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(ids)
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())

    return model, loss


def measure(
    name: str,
    model: nn.Module,
    loss_of: Callable[[nn.Module], torch.Tensor],
    rounds: int,
    block: int,
    gpu: bool,
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fingerprints = WeightFingerprints(INTERVAL)
    fingerprints.add("", model)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    def train_step() -> None:
        loss_of(model).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def fingerprint() -> None:
        fingerprints.take(0)

    def timed(call: Callable[[], None]) -> float:
        sync()
        started = time.perf_counter()
        for _ in range(block):
            call()
        sync()
        return (time.perf_counter() - started) / block

    for _ in range(3):  # warm-up: allocator, kernels, the cached position weights
        train_step()
        fingerprint()
    steps: list[float] = []
    takes: list[float] = []
    for index in range(rounds):
        if index % 2:
            takes.append(timed(fingerprint))
            steps.append(timed(train_step))
        else:
            steps.append(timed(train_step))
            takes.append(timed(fingerprint))
    step, take = statistics.median(steps), statistics.median(takes)
    params = sum(p.numel() for p in model.parameters())
    tensors = len(list(model.parameters()))
    amortised = take / INTERVAL
    print(
        f"| {name} ({params / 1e6:.1f}M parameters, {tensors} tensors)"
        f" | {step * 1e3:.2f} ms ({min(steps) * 1e3:.2f}-{max(steps) * 1e3:.2f})"
        f" | {take * 1e6:.0f} us ({min(takes) * 1e6:.0f}-{max(takes) * 1e6:.0f})"
        f" | {amortised * 1e6:.2f} us | {100 * amortised / step:.3f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
    parser.add_argument("--gpu", action="store_true", help="CUDA, GPT-2-small shape")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    print(
        f"Weight fingerprint cost, interval {INTERVAL} (median of {rounds} interleaved rounds;"
        " one fingerprint per model per interval)\n"
    )
    print(
        "| model | training step | one fingerprint | amortised per step"
        f" (1 in {INTERVAL}) | share of the step |"
    )
    print("|---|---|---|---|---|")
    if args.gpu:
        model, loss_of = gpt_case()
        measure("GPT-2 small, bf16 autocast, CUDA", model, loss_of, rounds, 5, gpu=True)
        return
    torch.set_num_threads(1)
    for width, depth in ((512, 8), (64, 100)):
        model, loss_of = mlp_case(width, depth)
        measure(f"MLP {depth} x {width}, CPU", model, loss_of, rounds, 20, gpu=False)


if __name__ == "__main__":
    main()
