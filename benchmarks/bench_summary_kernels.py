"""GPU time of the per-step gradient summary alone, beside its parts and an optimizer step.

    python benchmarks/bench_summary_kernels.py      # needs CUDA

The gradients of one backward pass of bench_capture's GPT-2-small-shaped model (148
float32 tensors, 124M values) are summarized 50 times back to back between two CUDA
events: `tracer.capture.gradients.kernels.step_summary` (what Tracer runs each optimizer
step), the L2 and the inf-norm foreach kernels it is built from, AdamW's step, and a copy of
the same bytes (the memory-bandwidth floor: a summary needs at least one read of every
gradient). With triton installed, the same summary through the opt-in one-read kernel
(`fused_gradient_kernel`, `tracer.capture.gradients.fused`) and that kernel alone, after a
check that its row equals the foreach one (exit 1 if not, or if it fell back).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_capture import GPT

from tracer.capture.gradients import fused
from tracer.capture.gradients.kernels import step_summary


def gpu_ms(work: Callable[[], Any], calls: int = 50) -> tuple[float, float]:
    """(GPU ms, host ms) per call, after 5 warm-up calls."""
    for _ in range(5):
        work()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    host_start = time.perf_counter()
    for _ in range(calls):
        work()
    host_ms = (time.perf_counter() - host_start) / calls * 1e3
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / calls, host_ms


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU; none is visible.", file=sys.stderr)
        return 2
    model = GPT().cuda()
    ids = torch.randint(0, 50257, (8, 1024), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids)
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    values = sum(g.numel() for g in grads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    same_bytes = torch.empty(values, dtype=grads[0].dtype, device="cuda")
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}: {len(grads)} gradients,"
        f" {values:,} {grads[0].dtype} values\n"
    )
    print("| work | GPU ms per call | host ms per call |")
    print("|---|---|---|")
    rows: dict[str, Callable[[], Any]] = {
        "step_summary (Tracer, every step)": lambda: step_summary(grads, None, len(grads)),
        **fused_rows(grads),
        "foreach L2 norm": lambda: torch._foreach_norm(grads, 2, dtype=torch.float32),
        "foreach inf-norm": lambda: torch._foreach_norm(grads, float("inf"), dtype=torch.float32),
        "copy of the same bytes (read + write)": same_bytes.clone,
        "AdamW step": optimizer.step,
    }
    for label, work in rows.items():
        device_ms, host_ms = gpu_ms(work, 20 if label == "AdamW step" else 50)
        print(f"| {label} | {device_ms:.3f} | {host_ms:.3f} |")
    if fused._failure is not None:
        print(f"\nthe fused kernel fell back to foreach: {fused._failure}", file=sys.stderr)
        return 1
    return 0


def fused_rows(grads: list[Any]) -> dict[str, Callable[[], Any]]:
    """The fused kernel's rows, after checking it against the foreach summary; none without
    triton. Exit 1 when it disagrees (the figures of a wrong kernel mean nothing)."""
    if importlib.util.find_spec("triton") is None:
        print("(triton is not installed: no fused-kernel rows)\n", file=sys.stderr)
        return {}
    summary = fused.FusedSummary()
    got = step_summary(grads, None, len(grads), fused=summary)
    want = step_summary(grads, None, len(grads))
    if fused._failure is not None:
        sys.exit(f"the fused kernel fell back to foreach: {fused._failure}")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert torch.equal(got, step_summary(grads, None, len(grads), fused=summary))
    difference = ((got - want).abs() / want.abs()).max().item()
    print(f"fused row = foreach row within a relative {difference:.2g}; bit-identical reruns\n")
    return {
        "step_summary, fused_gradient_kernel=True": lambda: step_summary(
            grads, None, len(grads), fused=summary
        ),
        "fused kernel alone (norms and max)": lambda: summary.norms_and_max(grads),
    }


if __name__ == "__main__":
    sys.exit(main())
