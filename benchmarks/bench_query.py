"""Tracer query benchmarks: `QueryEngine` on long runs, beside floors measured in the same run.

    python benchmarks/bench_query.py            # two runs of 1,000,000 steps x 3 metrics
    python benchmarks/bench_query.py --quick    # 100,000 steps, a smoke run

The data: two runs ("run1", "run2", one project) of `steps` steps x 3 metrics (loss,
accuracy, lr), written straight through `StorageBackend.write_metrics` in batches of 100,000
steps, plus an interval checkpoint every 1,000 steps and a few hundred anomalies each. run2
equals run1 except its loss, 10% higher from three quarters of the way on, so
`compare_runs` scans all of accuracy and lr and three quarters of loss for a divergence.

Measurements (median with min-max over repeats; Tracer and floor repeats interleaved, the
order rotating, so load from other processes hits both alike):
1. `QueryEngine.get_run_summary("run1")`: reads the run row, the per-metric aggregates kept
   on write, the anomalies and the checkpoints. Floor: a `SELECT count(*) FROM runs`
   round trip on a plain sqlite3 connection to the same file.
2. `QueryEngine.compare_runs("run1", "run2", ["loss", "accuracy", "lr"])`: reads six whole
   histories, then final/min/max/mean/count and the first divergence of each metric. Floor:
   the same six `get_metric_timeseries` reads alone, what any comparison must at least do.
Targets: each under 0.5 s. The table goes to stdout, progress to stderr; the exit status is 0
whatever the figures, unless --strict.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench_core import Stats, progress  # the same figures and progress lines

from tracer.analysis import QueryEngine
from tracer.config import TracerConfig
from tracer.records import AnomalyWrite
from tracer.storage import StorageBackend, open_storage

HEADER = "| measurement | Tracer | floor | ratio (Tracer/floor) | target | pass/fail |"
METRICS = ("loss", "accuracy", "lr")
PROJECT = "bench"
BATCH_STEPS = 100_000
CHECKPOINT_EVERY = 1_000
ANOMALY_EVERY = 5_000
TARGET_S = 0.5


@dataclass(frozen=True)
class Sizes:
    steps: int
    repeats: int


FULL = Sizes(1_000_000, 5)
QUICK = Sizes(100_000, 3)


def in_ms(stats: Stats) -> str:
    """`median ms (min-max, n=repeats)` of figures measured in seconds."""
    return stats.scaled(1000).show("ms", 3 if stats.median < 0.001 else 1)


def storage_at(directory: str) -> StorageBackend:
    """`StorageBackend(config)`: the backend the storage_path selects (SQLite here)."""
    return open_storage(TracerConfig(project_name=PROJECT, storage_path=directory))


# -- the data -----------------------------------------------------------------------------------
def values_at(step: int, total: int, second: bool) -> tuple[float, float, float]:
    """Non-integral floats (SQLite would store integral ones as integers)."""
    loss = 2.0 / (1.0 + step * 1e-4) + 0.01
    if second and step >= total * 3 // 4:
        loss *= 1.10
    return loss, 0.5 + step * 4e-7, 3e-4 / (1.0 + step * 1e-6)


def build_run(storage: StorageBackend, run_id: str, steps: int, second: bool) -> None:
    """One run: metrics in large batches, interval checkpoints, a few hundred anomalies."""
    storage.create_run(
        run_id, PROJECT, run_id, time.time(), {"lr": 3e-4, "batch_size": 32}, tags=["bench"]
    )
    for start in range(0, steps, BATCH_STEPS):
        block = range(start, min(start + BATCH_STEPS, steps))
        columns = list(zip(*(values_at(i, steps, second) for i in block), strict=True))
        storage.write_metrics(
            run_id, {name: (block, list(col)) for name, col in zip(METRICS, columns, strict=True)}
        )
    for step in range(CHECKPOINT_EVERY, steps, CHECKPOINT_EVERY):
        loss, accuracy, lr = values_at(step, steps, second)
        storage.write_checkpoint(
            run_id,
            step,
            time.time(),
            {"loss": loss, "accuracy": accuracy, "lr": lr},
            {"fc.weight": {"norm": 1.0, "mean": 0.0}},
            {"process_rss_mb": 512.0},
        )
    anomalies: list[AnomalyWrite] = [
        {
            "run_id": run_id,
            "step": step,
            "anomaly_type": "loss_spike" if step % 2 else "gradient_explosion",
            "severity": "warning",
            "subject": "loss",
            "value": 9.0,
            "baseline": 1.0,
            "threshold": 8.0,
            "message": f"synthetic anomaly at step {step}",
            "detector": "bench",
        }
        for step in range(ANOMALY_EVERY // 2, steps, ANOMALY_EVERY)
    ]
    storage.write_anomalies(anomalies)
    storage.update_run(run_id, status="finished", end_time=time.time(), total_steps=steps)


# -- measurements -------------------------------------------------------------------------------
def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleave(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each timing once per round, rotating the order."""
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


def check_results(query: QueryEngine, steps: int) -> None:
    """The timed calls answer correctly, so the figures time real work."""
    summary = query.get_run_summary("run1")
    assert summary["total_steps"] == steps, summary["total_steps"]
    assert set(summary["final_metrics"]) == set(METRICS), summary["final_metrics"]
    assert summary["anomalies"] == len(range(ANOMALY_EVERY // 2, steps, ANOMALY_EVERY))
    comparison = query.compare_runs("run1", "run2", list(METRICS))["metrics"]
    assert comparison["loss"]["first_divergence_step"] == steps * 3 // 4
    assert comparison["accuracy"]["first_divergence_step"] is None
    assert comparison["lr"]["first_divergence_step"] is None
    assert all(comparison[m]["run1"]["count"] == steps for m in METRICS)
    assert math.isclose(comparison["accuracy"]["delta"], 0.0, abs_tol=0.0)


def measure(directory: str, sizes: Sizes) -> list[tuple[str, Stats, Stats]]:
    with QueryEngine(storage_path=directory) as query:
        check_results(query, sizes.steps)
        ids = [query.resolve_run(name)["run_id"] for name in ("run1", "run2")]
        raw = sqlite3.connect(os.path.join(directory, "tracer.db"))
        try:

            def summary() -> float:
                return timed(lambda: query.get_run_summary("run1"))

            def summary_floor() -> float:
                return timed(lambda: raw.execute("SELECT count(*) FROM runs").fetchall())

            def compare() -> float:
                return timed(lambda: query.compare_runs("run1", "run2", list(METRICS)))

            def compare_floor() -> float:
                def read_all() -> None:
                    for run_id in ids:
                        for metric in METRICS:
                            query.storage.get_metric_timeseries(run_id, metric)

                return timed(read_all)

            progress(f"timing, {sizes.repeats} interleaved repeats")
            samples = interleave(
                {
                    "summary": summary,
                    "summary_floor": summary_floor,
                    "compare": compare,
                    "compare_floor": compare_floor,
                },
                sizes.repeats,
            )
        finally:
            raw.close()
    return [
        (
            "get_run_summary",
            Stats.of(samples["summary"]),
            Stats.of(samples["summary_floor"]),
        ),
        (
            "compare_runs, 3 metrics",
            Stats.of(samples["compare"]),
            Stats.of(samples["compare_floor"]),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 steps, 3 repeats")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="tracer-bench-query-") as directory:
        progress(f"writing 2 runs x {sizes.steps:,} steps x {len(METRICS)} metrics")
        build_start = time.perf_counter()
        storage = storage_at(directory)
        try:
            build_run(storage, "run1", sizes.steps, second=False)
            build_run(storage, "run2", sizes.steps, second=True)
        finally:
            storage.close()
        progress(f"written in {time.perf_counter() - build_start:.1f} s")
        rows = measure(directory, sizes)
    print(
        f"Tracer query benchmark: 2 runs x {sizes.steps:,} steps x {len(METRICS)} metrics,"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}"
    )
    print()
    print(HEADER)
    print("|---|---|---|---|---|---|")
    passed = True
    for name, mine, floor in rows:
        ok = mine.median < TARGET_S
        passed = passed and ok
        ratio = f"{mine.median / floor.median:,.1f}x" if floor.median else "n/a"
        target = f"median < {TARGET_S * 1000:.0f} ms"
        print(
            f"| {name} | {in_ms(mine)} | {in_ms(floor)} | {ratio} | {target}"
            f" | {'PASS' if ok else 'FAIL'} |"
        )
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
