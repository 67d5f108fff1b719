"""Tracer detection benchmark: how well the built-in detectors find injected faults, and what
online detection costs per step.

    python benchmarks/bench_detection.py          # fault scenarios, 30 clean runs, 100k steps
    python benchmarks/bench_detection.py --quick  # fault scenarios, 3 clean runs, 20k steps

1. Fault scenarios (needs torch): each scenario of `tests/core/detection_harness.py` trains a
   small MLP on the CPU under Tracer (checkpoint_interval=50) with one injected fault. Per
   scenario: whether the fault was found online and offline in its step window (recall), the
   latency, the serious (warning + critical) anomalies and how many of them an injected fault
   explains (precision), and whether the online and offline anomaly sets are identical.
2. Clean runs (needs torch): healthy runs (noisy batches of 8-16, warmup, step decay, AdamW
   and SGD, system sampled every 50 ms); every serious anomaly is a false alarm, reported
   per 1,000 steps. Info-level anomalies (a loss plateau once converged) are counted apart.
3. Cost of online detection: `DetectorSet.feed` with every built-in detector over a synthetic
   stream shaped like a real run (loss, accuracy, lr, grad/global_norm, grad/max_abs,
   grad/nonfinite_layers and the writer's _timestamp at every step; a checkpoint with
   12 layers' gradient statistics every 1,000 steps), fed in flush-sized batches of 100
   steps, as the writer thread does. Baseline: the same loop (building the batches, calling
   feed) with no detectors. Reported in microseconds per step, median (min-max) over
   interleaved repeats; target: under 5 us per step with every detector.
The tables go to stdout (markdown), progress to stderr. The exit status is 0 whatever the
figures, unless --strict.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.core.detection_harness

from tracer.detection.base import Detector
from tracer.detection.plugin import BUILTIN_DETECTORS
from tracer.detection.runner import DetectorSet
from tracer.storage.base import CheckpointWrite, EventWrite

TARGET_US = 5.0
ALL = "every built-in detector"
NONE = "baseline: the same loop, no detector"
FLUSH_STEPS = 100
CHECKPOINT_EVERY = 1_000
LAYERS = 12
STAT_NAMES = ("norm", "mean", "std", "min", "max", "num_zeros", "num_nans", "num_infs")

Points = dict[str, tuple[list[int], list[float]]]


@dataclass(frozen=True)
class Sizes:
    clean_seeds: int
    stream_steps: int
    repeats: int


FULL = Sizes(clean_seeds=30, stream_steps=100_000, repeats=7)
QUICK = Sizes(clean_seeds=3, stream_steps=20_000, repeats=3)


def progress(message: str) -> None:
    print(f"[bench_detection] {message}", file=sys.stderr, flush=True)


# -- 1 and 2: scenarios ------------------------------------------------------------------------


def yes_no(value: bool) -> str:
    return "yes" if value else "**no**"


def scenario_tables(sizes: Sizes) -> tuple[list[str], bool]:
    """Run the fault scenarios and the clean runs; return the table lines and whether every
    fault was found and online always equalled offline."""
    from tests.core import detection_harness as harness

    lines: list[str] = []
    all_good = True
    with tempfile.TemporaryDirectory(prefix="tracer-bench-detection-") as directory:
        outcomes = []
        for scenario in harness.fault_scenarios().values():
            progress(f"fault scenario {scenario.name} ({scenario.steps} steps)")
            outcomes.append(harness.run_scenario(scenario, storage_path=directory))
        lines += [
            "### Fault scenarios (checkpoint_interval=50)",
            "",
            "| scenario | injected fault (step) | must find | found online / offline"
            " | latency (steps) | serious anomalies | explained by the fault (precision)"
            " | online = offline |",
            "|---|---|---|---|---|---|---|---|",
        ]
        faults = found = explained = serious = agreed = 0
        for outcome in outcomes:
            for fault in outcome.scenario.faults:
                online, offline = outcome.detected(fault), outcome.detected(fault, "offline")
                faults += 1
                found += online and offline
                all_good = all_good and online and offline and outcome.agree
                hits, total = outcome.explained()
                explained, serious = explained + hits, serious + total
                must = "; ".join(
                    "/".join(e.types)
                    + (f" on {e.subject}" if e.subject else "")
                    + (" at the step" if e.exact else f" within {e.within}")
                    for e in fault.expect
                )
                latency = outcome.latency(fault)
                precision = f"{hits}/{total} ({hits / total:.0%})" if total else "0/0 (n/a)"
                lines.append(
                    f"| {outcome.scenario.name} | {fault.label} ({fault.step}) | {must}"
                    f" | {yes_no(online)} / {yes_no(offline)}"
                    f" | {'-' if latency is None else latency} | {total} | {precision}"
                    f" | {yes_no(outcome.agree)} |"
                )
            agreed += outcome.agree
        lines += [
            "",
            f"Recall: {found}/{faults} injected faults found online and offline in their window."
            f" Precision: {explained}/{serious} serious anomalies of the fault runs are"
            f" explained by an injected fault ({explained / max(serious, 1):.0%}). Online ="
            f" offline in {agreed}/{len(outcomes)} runs.",
            "",
        ]
        clean = harness.clean_scenarios(range(sizes.clean_seeds))
        clean_outcomes = []
        for scenario in clean:
            progress(
                f"clean run {scenario.name} ({scenario.optimizer}, batch"
                f" {scenario.batch_size}, {scenario.steps} steps)"
            )
            clean_outcomes.append(harness.run_scenario(scenario, storage_path=directory))
    steps = sum(o.steps_run for o in clean_outcomes)
    false_alarms = [a for o in clean_outcomes for a in o.serious()]
    false_offline = sum(len(o.serious("offline")) for o in clean_outcomes)
    infos = [a for o in clean_outcomes for a in o.online if a["severity"] == "info"]
    clean_agree = sum(o.agree for o in clean_outcomes)
    all_good = all_good and clean_agree == len(clean_outcomes)
    kinds = sorted({a["anomaly_type"] for a in false_alarms})
    lines += [
        "### Clean runs",
        "",
        "| runs | steps | serious anomalies online / offline | false alarms per 1,000 steps"
        " | info anomalies | online = offline |",
        "|---|---|---|---|---|---|",
        f"| {len(clean_outcomes)} (AdamW b16, SGD b16, AdamW b8) | {steps:,}"
        f" | {len(false_alarms)} / {false_offline}"
        f" | {1000 * len(false_alarms) / max(steps, 1):.2f}"
        f"{' (' + ', '.join(kinds) + ')' if kinds else ''}"
        f" | {len(infos)} ({', '.join(sorted({a['anomaly_type'] for a in infos})) or '-'})"
        f" | {clean_agree}/{len(clean_outcomes)} |",
        "",
    ]
    return lines, all_good


# -- 3: cost ---------------------------------------------------------------------------------


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


def cost_table(sizes: Sizes) -> tuple[list[str], bool]:
    progress(f"building a {sizes.stream_steps:,}-step stream")
    points, checkpoints = synthetic_stream(sizes.stream_steps)
    steps = sizes.stream_steps
    variants: dict[str, Callable[[], list[Detector]]] = {
        ALL: lambda: [cls() for cls in BUILTIN_DETECTORS],
        NONE: lambda: [],
    }
    singles = {f"only {cls.name}": _only(cls) for cls in BUILTIN_DETECTORS}
    samples: dict[str, list[float]] = {name: [] for name in [*variants, *singles]}
    for round_index in range(sizes.repeats):
        progress(f"cost round {round_index + 1}/{sizes.repeats}")
        names = list(variants)
        if round_index % 2:
            names.reverse()  # interleaved, the order alternating
        for name in names:
            runner = DetectorSet("bench", variants[name]())
            samples[name].append(feed_all(runner, points, checkpoints) / steps * 1e6)
        for name, make in singles.items():
            if round_index < max(1, sizes.repeats // 2):
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 clean runs, 20,000-step stream")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("tracer").setLevel(logging.ERROR)  # "halts training", name reuse, ...
    lines: list[str] = []
    passed = True
    try:
        import torch  # noqa: F401
    except ImportError:
        lines += ["torch is not installed: the fault scenarios and clean runs are skipped.", ""]
    else:
        table, good = scenario_tables(sizes)
        lines += table
        passed = passed and good
    table, ok = cost_table(sizes)
    lines += table
    passed = passed and ok
    print(
        f"Tracer detection benchmark{' (--quick)' if args.quick else ''}:"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs"
    )
    print()
    print("\n".join(lines))
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
