"""Runs as data: `QueryEngine.to_arrow`, `to_pandas` and `runs_frame` on large stores, beside
baselines measured in the same run.

    python benchmarks/bench_frames.py            # 10 runs x 1,000,000 steps; 10,000 runs
    python benchmarks/bench_frames.py --quick    # 10 runs x 100,000 steps; 1,000 runs

Needs pyarrow and pandas (`tracer-core[pandas]`); numpy comes with pandas.

The data, written straight through `StorageBackend.write_metrics` in batches of 100,000
steps (as a long run's writer leaves it, in chunks): 10 runs of `steps` steps of `loss`
(non-integral floats, a NaN and an Inf in each run) and `_timestamp`, the wall time the run
writer stores with every step, so the long table's `time` column is joined for real. And a
sweep of `sweep_runs` runs, each with a config of 5 values, 3 metrics, a logged summary, an
anomaly every tenth run.

Measurements (each repeat in a fresh child process, so one's memory never shows in the next;
median with min-max):
1. `to_arrow` of the 10 runs (10^7 points with steps, time, rank): wall time. Baseline: the
   same histories through `QueryEngine.get_metric_history`, the dict-of-lists API that was
   the way to read them before (one run and metric at a time). Target < 2 s.
2. `to_pandas`: wall time, same baseline. Target < 3 s.
3. Peak memory of 1 and 2: the child's peak RSS (`ru_maxrss`) minus its RSS just before the
   call (libraries imported, store open), over the result's size (`Table.nbytes`, or the
   DataFrame's `memory_usage(deep=True)`). Target < 2x.
4. `runs_frame` of the sweep: wall time. Baselines: `list_runs` alone (the floor: one query
   for the rows) and the runs table built through `StorageBackend`'s per-run defaults (what
   a backend without the one-query overrides costs). Target < 1 s.
The table goes to stdout, progress to stderr; the exit status is 0 whatever the figures,
unless --strict.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from tracer.config import TracerConfig
from tracer.records import AnomalyWrite
from tracer.storage import open_storage

PROJECT = "frames"
SWEEP = "sweep"
RUNS = 10
BATCH_STEPS = 100_000
HEADER = "| measurement | Tracer | baseline | ratio | target | pass/fail |"


@dataclass(frozen=True)
class Sizes:
    steps: int
    sweep_runs: int
    repeats: int


FULL = Sizes(1_000_000, 10_000, 3)
QUICK = Sizes(100_000, 1_000, 2)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def show(samples: Sequence[float], unit: str, digits: int = 2) -> str:
    return (
        f"{statistics.median(samples):,.{digits}f} {unit}"
        f" ({min(samples):,.{digits}f}-{max(samples):,.{digits}f}, n={len(samples)})"
    )


# -- the data -----------------------------------------------------------------------------------
def build_histories(directory: str, steps: int) -> None:
    store = open_storage(TracerConfig(project_name=PROJECT, storage_path=directory))
    start = time.time() - steps
    for run in range(RUNS):
        run_id = f"run{run}"
        store.create_run(run_id, PROJECT, run_id, start, {"run": run})
        for first in range(0, steps, BATCH_STEPS):
            batch = range(first, min(first + BATCH_STEPS, steps))
            loss = array("d", (2.0 / (1.0 + s * 1e-4) + run * 1e-3 + 0.01 for s in batch))
            if first == 0:
                loss[7], loss[11] = math.nan, math.inf
            stamps = array("d", (start + s * 0.01 for s in batch))
            store.write_metrics(run_id, {"loss": (batch, loss), "_timestamp": (batch, stamps)})
        store.update_run(run_id, status="finished", end_time=start + steps, total_steps=steps)
    store.close()


def spike(run_id: str) -> AnomalyWrite:
    return {
        "run_id": run_id, "step": 1, "anomaly_type": "loss_spike", "severity": "warning",
        "subject": "loss", "value": 2.0, "baseline": 1.0, "threshold": 1.5, "message": "spike",
        "detector": "loss", "end_step": 1, "count": 1, "open": False, "hint": "",
    }  # fmt: skip


def build_sweep(directory: str, runs: int) -> None:
    store = open_storage(TracerConfig(project_name=SWEEP, storage_path=directory))
    now = time.time()
    for n in range(runs):
        run_id = f"s{n:05d}"
        config = {
            "lr": (1e-2, 1e-3, 1e-4)[n % 3],
            "optimizer": {"name": ("adam", "sgd")[n % 2], "momentum": 0.9},
            "batch_size": 32 * (1 + n % 4),
            "seed": n,
        }
        store.create_run(run_id, SWEEP, f"sweep-{n}", now + n, config)
        final = 1.0 + (n % 7) * 0.1
        store.write_batch(
            run_id,
            {
                "loss": ([0, 1, 2], [3.0, 2.0, final]),
                "eval/accuracy": ([2], [0.5 + (n % 5) * 0.1]),
                "lr": ([0, 1, 2], [config["lr"]] * 3),
            },
            events=[{"step": 2, "kind": "summary", "data": {"tokens": 1000 * n}}],
            anomalies=[spike(run_id)] if n % 10 == 0 else [],
            run_fields={"status": "finished", "end_time": now + n + 30, "total_steps": 3},
        )
    store.close()


# -- one measurement, in a child process --------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def measure(kind: str, directory: str) -> dict[str, float]:
    """Runs in the child: one call, its wall time, peak memory over the RSS before it, and
    the result's size and rows."""
    import pandas  # noqa: F401  (imported before the baseline RSS, as a notebook has it)
    import pyarrow  # noqa: F401

    from tracer.analysis import QueryEngine
    from tracer.storage.base import StorageBackend

    runs = [f"run{n}" for n in range(RUNS)]
    with QueryEngine(directory) as query:
        query.resolve_run(runs[0])  # the store is open and its schema read
        before = rss_bytes()
        began = time.perf_counter()
        if kind == "arrow":
            result = query.to_arrow(runs, ["loss"])
            size, rows = result.nbytes, result.num_rows
        elif kind == "pandas":
            result = query.to_pandas(runs, ["loss"])
            size, rows = int(result.memory_usage(deep=True).sum()), len(result)
        elif kind == "history":
            result = [query.get_metric_history(run, "loss") for run in runs]
            size, rows = 0, sum(len(h["values"]) for h in result)
        elif kind == "runs_frame":
            result = query.runs_frame(SWEEP)
            size, rows = int(result.memory_usage(deep=True).sum()), len(result)
        elif kind == "list_runs":
            result = query.list_runs(SWEEP)
            size, rows = 0, len(result)
        elif kind == "runs_frame_defaults":
            storage = query.storage
            for name in ("metric_summaries", "events_by_run", "anomaly_counts"):
                method = getattr(StorageBackend, name)
                setattr(storage, name, method.__get__(storage))
            result = query.runs_frame(SWEEP)
            size, rows = int(result.memory_usage(deep=True).sum()), len(result)
        else:
            raise ValueError(kind)
        elapsed = time.perf_counter() - began
        peak = peak_rss_bytes() - before
    return {"seconds": elapsed, "peak": peak, "size": size, "rows": rows}


def in_child(kind: str, directory: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, directory],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def repeated(
    kinds: Sequence[str], directory: str, repeats: int
) -> dict[str, list[dict[str, float]]]:
    """Each kind `repeats` times, interleaved (the order rotating), so load hits all alike."""
    found: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for round_ in range(repeats):
        order = list(kinds[round_ % len(kinds) :]) + list(kinds[: round_ % len(kinds)])
        for kind in order:
            found[kind].append(in_child(kind, directory))
            progress(f"{kind}: {found[kind][-1]['seconds']:.3f} s")
    return found


def row(
    name: str, mine: list[float], theirs: list[float], unit: str, target: Optional[float]
) -> str:
    ratio = statistics.median(mine) / statistics.median(theirs)
    if target is None:
        goal, verdict = "-", "info"
    else:
        goal = f"< {target:g} {unit}"
        verdict = "PASS" if statistics.median(mine) < target else "FAIL"
    return (
        f"| {name} | {show(mine, unit)} | {show(theirs, unit)} | {ratio:,.2f}x"
        f" | {goal} | {verdict} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return 0
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as root:
        histories = os.path.join(root, "store")  # one store: both projects
        began = time.perf_counter()
        build_histories(histories, sizes.steps)
        progress(f"{RUNS} x {sizes.steps:,} steps written in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        build_sweep(histories, sizes.sweep_runs)
        progress(f"{sizes.sweep_runs:,} sweep runs written in {time.perf_counter() - began:.1f} s")
        kinds = ["arrow", "pandas", "history", "runs_frame", "list_runs", "runs_frame_defaults"]
        found = repeated(kinds, histories, sizes.repeats)

    def of(kind: str, key: str) -> list[float]:
        return [sample[key] for sample in found[kind]]

    points = int(found["arrow"][0]["rows"])
    lines = [
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs;"
        f" {RUNS} runs x {sizes.steps:,} steps = {points:,} points; {sizes.sweep_runs:,} runs"
        " in the runs table",
        "",
        HEADER,
        "|---|---|---|---|---|---|",
        row("1. to_arrow (baseline: get_metric_history)", of("arrow", "seconds"),
            of("history", "seconds"), "s", 2.0),
        row("2. to_pandas (baseline: get_metric_history)", of("pandas", "seconds"),
            of("history", "seconds"), "s", 3.0),
    ]  # fmt: skip
    for kind in ("arrow", "pandas"):
        ratios = [s["peak"] / s["size"] for s in found[kind]]
        peak_mb = [s["peak"] / 1e6 for s in found[kind]]
        size_mb = [s["size"] / 1e6 for s in found[kind]]
        verdict = "PASS" if statistics.median(ratios) < 2 else "FAIL"
        lines.append(
            f"| 3. {kind} peak memory over the result | {show(peak_mb, 'MB', 0)} |"
            f" result {show(size_mb, 'MB', 0)} | {statistics.median(ratios):,.2f}x | < 2x"
            f" | {verdict} |"
        )
    lines.append(
        row("4. runs_frame (baseline: list_runs, the floor)", of("runs_frame", "seconds"),
            of("list_runs", "seconds"), "s", 1.0)
    )  # fmt: skip
    lines.append(
        row("4b. runs_frame through the per-run defaults", of("runs_frame_defaults", "seconds"),
            of("list_runs", "seconds"), "s", None)
    )  # fmt: skip
    print("\n".join(lines))
    missed = [line for line in lines if line.endswith("| FAIL |")]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
