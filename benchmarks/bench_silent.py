"""Tracer silent-bug benchmark: does Tracer notice a run that trains but is wrong?

    python benchmarks/bench_silent.py                    # everything (~1 min on 2 cores)
    python benchmarks/bench_silent.py --only NAME,NAME   # some bug scenarios (+ twins)
    python benchmarks/bench_silent.py --seeds 7,8        # the catalogue at fresh seeds
    python benchmarks/bench_silent.py --config '{"detectors": {"repeated_batch": false}}'
    python benchmarks/bench_silent.py --json results.json --strict

Each bug scenario (`silent_bench/scenarios.py`: gradients never zeroed, accumulation without
dividing, layers frozen by mistake, a head left out of the optimizer, an optimizer of another
model copy, lr 100x too small, a warmup scheduler never stepped, an epoch scheduler stepped
per batch, eval() while training, train() while evaluating, F.dropout ignoring the training
flag, shuffled labels, a broadcasting MSE, a repeated batch, a GradScaler that skips every
step, weight decay on norms, an init 30x off) is a small real CPU training beside its clean
twin (same seed, only the bug's lines differ); extra clean runs (BatchNorm CNN with conv
biases before BN, LayerNorm transformer with warmup, a frozen backbone under a trainable
head, fine-tuning at lr 3e-5, rank-4 adapters on a frozen model, a GradScaler that never
skips, full-batch regression, accumulation zeroing in place, zero_grad before the
backward), two seeds each. `--seeds` runs every bug scenario, its twin and the extra clean
runs (their first seed's setup) at each of the seeds given instead: a check of the rules on
seeds they were not tuned on. Scored (`silent_bench/scoring.py`): caught = a shown report
(warning or critical) within 50 steps of onset that the twin does not also get; false
alarms = shown reports on twins and clean runs; online and offline. Scenarios alternate
"tune" / "held": tune on the first, read the second as the honest figure.

Tables (markdown) go to stdout, progress to stderr. The exit status is 0 whatever the
figures, unless --strict and a target (>= 80% caught in each half, 0 false alarms) is missed.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for silent_bench, detection_bench

from silent_bench.scenarios import Scenario, catalogue
from silent_bench.scoring import (
    BugScore,
    CleanScore,
    bug_table,
    clean_table,
    score_bug,
    score_clean,
    summary,
)
from silent_bench.training import RunResult, run


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(scenario: Scenario, directory: str, extra: dict[str, Any]) -> RunResult:
    try:
        return run(scenario, directory, extra)
    except Exception as error:  # a crash: counted and reported, the benchmark goes on
        traceback.print_exc(file=sys.stderr)
        return RunResult(scenario.name, error=repr(error)[:200])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", default="", help="bug scenarios to run (comma-separated)")
    parser.add_argument("--no-clean", action="store_true", help="skip the extra clean runs")
    parser.add_argument("--config", default="{}", help="extra tracer.init settings, as JSON")
    parser.add_argument("--json", metavar="FILE", help="write every run's reports to FILE")
    parser.add_argument(
        "--seeds", default="", help="run the catalogue at these seeds instead (comma-separated)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = json.loads(args.config)
    logging.getLogger("tracer").setLevel(logging.ERROR)
    bugs, clean = catalogue()
    names = [n for n in args.only.split(",") if n]
    if names:
        bugs = [s for s in bugs if s.name in names]
        clean = [s for s in clean if s.name in names]
    elif args.no_clean:
        clean = []
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    if seeds:
        bugs = [b.replace(name=f"{b.name}@{n}", seed=n) for n in seeds for b in bugs]
        firsts = [c for c in clean if c.name.endswith("_s1")]
        clean = [
            c.replace(
                name=f"{c.name.removesuffix('_s1')}@{n}", seed=n, split=("tune", "held")[i % 2]
            )
            for n in seeds
            for i, c in enumerate(firsts)
        ]
    started = time.perf_counter()
    bug_scores: list[BugScore] = []
    clean_scores: list[CleanScore] = []
    dump: list[dict[str, Any]] = []
    train_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="tracer-bench-silent-") as directory:
        for index, scenario in enumerate(bugs):
            progress(f"{index + 1}/{len(bugs)} {scenario.name} (+ twin)")
            bug = _run(scenario, directory, extra)
            twin_scenario = scenario.twin()
            twin = _run(twin_scenario, directory, extra)
            bug_scores.append(score_bug(scenario, bug, twin))
            clean_scores.append(score_clean(twin_scenario.replace(split=scenario.split), twin))
            train_seconds += bug.train_seconds + twin.train_seconds
            dump += [{"scenario": r.scenario, "online": r.online} for r in (bug, twin)]
        for index, scenario in enumerate(clean):
            progress(f"clean {index + 1}/{len(clean)} {scenario.name}")
            result = _run(scenario, directory, extra)
            clean_scores.append(score_clean(scenario, result))
            train_seconds += result.train_seconds
            dump.append({"scenario": result.scenario, "online": result.online})
    table, passed = summary(bug_scores, clean_scores)
    print(
        f"Tracer silent-bug benchmark: {platform.python_implementation()}"
        f" {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" {time.perf_counter() - started:.0f} s ({train_seconds:.0f} s in training loops);"
        f" extra config {extra or 'none'}"
    )
    print()
    print(
        "\n".join(["### Summary", "", *table, "", "### Bug scenarios", "", *bug_table(bug_scores)])
    )
    print()
    print("\n".join(["### Clean runs (twins and extra)", "", *clean_table(clean_scores)]))
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1, default=str) + "\n")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
