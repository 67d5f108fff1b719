"""The per-step cost of online detection (section 3 of the detection benchmark).

`DetectorSet.feed` with every built-in detector over a synthetic stream shaped like a real
run (loss, accuracy, lr, grad/global_norm, grad/max_abs, grad/nonfinite_layers and the
writer's _timestamp at every step; a checkpoint with 12 layers' gradient statistics every
1,000 steps), fed in flush-sized batches of 100 steps, as the writer thread does. Baseline:
the same loop (building the batches, calling feed) with no detectors. Microseconds per step,
median (min-max) over interleaved repeats; target: under 5 us per step with every detector.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from tracer.detection.base import Detector
from tracer.detection.builtin import BUILTIN_DETECTORS
from tracer.detection.runner import DetectorSet
from tracer.records import CheckpointWrite, EventWrite

TARGET_US = 5.0
ALL = "every built-in detector"
DEFAULTS = "the built-in detectors on by default"
NONE = "baseline: the same loop, no detector"
FLUSH_STEPS = 100
CHECKPOINT_EVERY = 1_000
LAYERS = 12
STAT_NAMES = ("norm", "mean", "std", "min", "max", "num_zeros", "num_nans", "num_infs")

Points = dict[str, tuple[list[int], list[float]]]


def progress(message: str) -> None:
    print(f"[bench_detection] {message}", file=sys.stderr, flush=True)


def synthetic_stream(steps: int, seed: int = 0) -> tuple[Points, list[CheckpointWrite]]:
    """A healthy run's series at every step, plus interval checkpoints (see the docstring)."""
    rng = random.Random(seed)
    index = list(range(steps))
    loss, accuracy, lr, norm, max_abs = [], [], [], [], []
    for step in index:
        level = 0.1 + 2.0 * math.exp(-step / (steps / 5))
        loss.append(level * rng.lognormvariate(0.0, 0.25))
        accuracy.append(min(1.0, max(0.0, 1.0 - level / 2.2 + rng.gauss(0.0, 0.02))))
        lr.append(3e-4 * min(1.0, (step + 1) / 1000) * 0.5 ** (step // (steps // 4 or 1)))
        grad = 1.5 * rng.lognormvariate(0.0, 0.3)
        norm.append(grad)
        max_abs.append(grad * 0.05 * rng.lognormvariate(0.0, 0.2))
    points: Points = {
        "_timestamp": (index, [1.7e9 + 0.05 * step for step in index]),
        "accuracy": (index, accuracy),
        "grad/global_norm": (index, norm),
        "grad/max_abs": (index, max_abs),
        "grad/nonfinite_layers": (index, [0.0] * steps),
        "loss": (index, loss),
        "lr": (index, lr),
    }
    checkpoints: list[CheckpointWrite] = []
    for step in range(CHECKPOINT_EVERY, steps, CHECKPOINT_EVERY):
        stats = {}
        for layer in range(LAYERS):
            values = [rng.lognormvariate(-1.0, 0.3)] + [rng.gauss(0.0, 1e-3) for _ in range(7)]
            entry = dict(zip(STAT_NAMES, values, strict=True))
            entry["max_norm_since_checkpoint"] = entry["norm"] * 1.5
            stats[f"layers.{layer}.weight"] = entry
        checkpoints.append(
            {
                "step": step,
                "timestamp": 1.7e9 + 0.05 * step,
                "reason": "interval",
                "metrics": {"loss": loss[step]},
                "gradient_stats": stats,
                "system_metrics": {},
                "extra": {},
            }
        )
    return points, checkpoints


def feed_all(runner: DetectorSet, points: Points, checkpoints: Sequence[CheckpointWrite]) -> float:
    """Feed the whole stream in flush-sized batches, as the writer thread does; seconds."""
    steps = len(points["loss"][0])
    events: list[EventWrite] = [
        {"step": 0, "kind": "gradient_capture", "data": {"point": "optimizer_step"}}
    ]
    by_step = {c["step"]: c for c in checkpoints}
    start_time = time.perf_counter()
    for start in range(0, steps, FLUSH_STEPS):
        end = start + FLUSH_STEPS
        batch = {name: (s[start:end], v[start:end]) for name, (s, v) in points.items()}
        due = [by_step[s] for s in range(start, min(end, steps)) if s in by_step]
        runner.feed(batch, events if start == 0 else (), due)
    return time.perf_counter() - start_time


def _only(cls: type[Detector]) -> Callable[[], list[Detector]]:
    return lambda: [cls()]


def cost_table(stream_steps: int, repeats: int) -> tuple[list[str], bool]:
    """The cost table's lines, and whether every detector together costs under the target."""
    progress(f"building a {stream_steps:,}-step stream")
    points, checkpoints = synthetic_stream(stream_steps)
    steps = stream_steps
    variants: dict[str, Callable[[], list[Detector]]] = {
        ALL: lambda: [cls() for cls in BUILTIN_DETECTORS],
        DEFAULTS: lambda: [cls() for cls in BUILTIN_DETECTORS if cls.enabled_by_default],
        NONE: lambda: [],
    }
    singles = {f"only {cls.name}": _only(cls) for cls in BUILTIN_DETECTORS}
    samples: dict[str, list[float]] = {name: [] for name in [*variants, *singles]}
    for round_index in range(repeats):
        progress(f"cost round {round_index + 1}/{repeats}")
        names = list(variants)
        if round_index % 2:
            names.reverse()  # interleaved, the order alternating
        for name in names:
            runner = DetectorSet("bench", variants[name]())
            samples[name].append(feed_all(runner, points, checkpoints) / steps * 1e6)
        for name, make in singles.items():
            if round_index < max(1, repeats // 2):
                runner = DetectorSet("bench", make())
                samples[name].append(feed_all(runner, points, checkpoints) / steps * 1e6)
    healthy = DetectorSet("bench", variants[ALL]()).feed(points, [], checkpoints)

    def show(values: Sequence[float]) -> str:
        low, high = min(values), max(values)
        return f"{statistics.median(values):.2f} ({low:.2f}-{high:.2f}, n={len(values)})"

    every = statistics.median(samples[ALL])
    floor = statistics.median(samples[NONE])
    ok = every < TARGET_US
    lines = [
        f"### Online detection cost: {steps:,} steps, 7 series per step, a checkpoint every"
        f" {CHECKPOINT_EVERY:,} steps ({LAYERS} layers), fed {FLUSH_STEPS} steps at a time",
        "",
        "| measurement | us per step, median (min-max) | minus baseline | target | pass/fail |",
        "|---|---|---|---|---|",
        f"| {ALL} | {show(samples[ALL])} | {every - floor:.2f} | < {TARGET_US:g} us"
        f" | {'PASS' if ok else 'FAIL'} |",
        f"| {DEFAULTS} | {show(samples[DEFAULTS])}"
        f" | {statistics.median(samples[DEFAULTS]) - floor:.2f} | info | info |",
        f"| {NONE} | {show(samples[NONE])} | - | info | info |",
    ]
    for name in singles:
        lines.append(
            f"| {name} | {show(samples[name])}"
            f" | {statistics.median(samples[name]) - floor:.2f} | info | info |"
        )
    lines += [
        "",
        f"The healthy stream raised {len(healthy)} anomalies with every detector (fed in one"
        " piece): " + (", ".join(sorted({a["anomaly_type"] for a in healthy})) or "none") + ".",
        "",
    ]
    return lines, ok
