"""Tracer detection benchmark: how well the built-in detectors find injected faults in real
small CPU trainings, how often they cry wolf on healthy runs, and what online detection costs.

    python benchmarks/bench_detection.py                  # everything (~2.2 min on 2 cores)
    python benchmarks/bench_detection.py --quick          # a subset, ~10 s
    python benchmarks/bench_detection.py --only NAME,NAME --interval 10
    python benchmarks/bench_detection.py --strict --json results.json

1. Scenarios (needs torch; `detection_bench/scenarios.py`, `healthy.py`): faulty trainings (8
   families: explosion, nan_inf, spike, divergence, vanishing, dead_layer, memory_leak, plateau),
   healthy trainings (6 LR schedules, 4 optimizers, batch sizes 4-256, MLP, CNN, regression,
   transformer) and long synthetic runs (200,000 steps), each at checkpoint_interval 10 and
   100. Scored over anomaly episodes shown by default (warning, critical), online (stored by
   the writer thread) and offline (`AnomalyDetector` replay): recall per family, time to
   detect, precision on the faulty runs, false alarms per 1,000 healthy steps, online =
   offline, crashes. Scenarios alternate between a "tune" and a "held" half: tune detectors
   on the first, read the second as the honest figure.
2. The per-step cost of online detection (`detection_bench/cost.py`), target < 5 us.

Tables (markdown) go to stdout, progress and tracebacks to stderr. The exit status is 0
whatever the figures, unless --strict and a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for detection_bench

from detection_bench.cost import cost_table, progress

INTERVALS = (10, 100)
QUICK_LONG_STEPS = 20_000


def run_scenarios(
    names: Sequence[str], quick: bool, intervals: Sequence[int]
) -> tuple[list[str], bool, list[dict[str, object]]]:
    """Run and score the scenarios; the table lines, whether every target was met, and the
    per-run results for --json."""
    from detection_bench import report
    from detection_bench.catalogue import catalogue, quick_subset
    from detection_bench.scoring import Score, score
    from detection_bench.training import RunResult, run_scenario

    scenarios = catalogue()
    if names:
        unknown = set(names) - {s.name for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in names]
    elif quick:
        scenarios = quick_subset(scenarios, QUICK_LONG_STEPS)
    scores: list[Score] = []
    with tempfile.TemporaryDirectory(prefix="tracer-bench-detection-") as directory:
        for interval in intervals:
            for index, scenario in enumerate(scenarios):
                progress(
                    f"interval {interval}: {index + 1}/{len(scenarios)} {scenario.name}"
                    f" ({scenario.family}, {scenario.steps:,} steps)"
                )
                try:
                    result = run_scenario(scenario, interval, directory)
                    scores.append(score(scenario, result))
                except Exception as error:  # a crash: counted, reported, the run goes on
                    traceback.print_exc(file=sys.stderr)
                    failed = RunResult(scenario.name, interval, error=repr(error)[:200])
                    scores.append(score(scenario, failed))
    lines = [
        "### Scenarios",
        "",
        "onset (ref): the fault step, and in brackets the step time to detect counts from when"
        " it differs (divergence: the loss's climb onset). Shown episodes: warning and critical;"
        " on healthy runs each is a false alarm. Explained: shown episodes that the injected"
        " fault explains.",
        "",
        *report.scenario_table(scores),
        "",
        "### Summary",
        "",
    ]
    passed = True
    for interval in intervals:
        for split in ("tune", "held"):
            table, ok = report.summary(scores, split, interval)
            lines += table
            passed = passed and ok
    return lines, passed, [s.to_json() for s in scores]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one faulty scenario per family, 2 healthy, 20k-step long runs, interval 10 only",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", metavar="FILE", help="write every per-run result to FILE")
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", default="", help="run only these scenarios (no cost table)"
    )
    parser.add_argument(
        "--interval",
        type=int,
        action="append",
        help="checkpoint interval(s) to run (default 10 and 100)",
    )
    parser.add_argument("--no-cost", action="store_true", help="skip the online-cost table")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    intervals = args.interval or ((10,) if args.quick else INTERVALS)
    logging.getLogger("tracer").setLevel(logging.ERROR)  # name reuse, halts, ...
    started = time.perf_counter()
    lines: list[str] = []
    results: list[dict[str, object]] = []
    passed = True
    try:
        import torch  # noqa: F401
    except ImportError:
        lines += ["torch is not installed: the scenarios are skipped.", ""]
    else:
        table, ok, results = run_scenarios(names, args.quick, intervals)
        lines += table
        passed = passed and ok
    if not (names or args.no_cost):
        table, ok = cost_table(20_000 if args.quick else 100_000, 3 if args.quick else 7)
        lines += table
        passed = passed and ok
    print(
        f"Tracer detection benchmark{' (--quick)' if args.quick else ''}:"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs, {time.perf_counter() - started:.0f} s"
    )
    print()
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
