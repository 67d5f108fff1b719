"""Team storage on PostgreSQL beside SQLite, both measured in the same run.

    python benchmarks/bench_postgres.py            # 10 runs x 1,000,000 steps; 1/4/16 writers
    python benchmarks/bench_postgres.py --quick    # 10 runs x 100,000 steps, a smoke run

It starts a throwaway PostgreSQL server the way the tests do (`tools/postgres_server.py`;
needs Debian's postgresql binaries and tracer-postgres installed), and a temp SQLite store.

Measurements (each with PostgreSQL, then SQLite as the baseline, ratio = PostgreSQL/SQLite):
1. Write throughput with 1, 4 and 16 writer processes at once, each its own run, writing
   flushes of 1,000 steps x 10 metrics through `StorageBackend.write_batch` (what the run's
   writer thread calls): points/s over the wall time from a common start to the last one
   done. Target (PostgreSQL): >= 500k points/s with 4 writers.
2. History read of one 1,000,000-step series (`get_metric_arrays`). Target: < 1 s.
3. `QueryEngine.compare_runs` of two 1M-step runs on one metric.
4. The chart query over 10 runs x 1M steps: each run reduced to 1,000 points by
   `StorageBackend.get_metric_reduced` (what the dashboard's series API asks; PostgreSQL
   answers from its chunks' summaries, SQLite reads the window and reduces it in Python).
   Target: < 0.5 s. For reference, the same reduction the old way on both: each run's
   `get_metric_window` then `reduce_points` in Python.
Figures are the median (min-max) of the repeats. Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tracer.analysis import QueryEngine
from tracer.analysis.downsample import reduce_points
from tracer.storage import StorageBackend, open_storage

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_FLUSH = 1_000
METRICS_PER_STEP = 10
WRITER_COUNTS = (1, 4, 16)
REPEATS = 3


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _server_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "postgres_server", ROOT / "tools" / "postgres_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _values(count: int, offset: int) -> list[float]:
    return [math.sin((offset + i) * 0.001) + (offset + i) * 1e-7 for i in range(count)]


# -- writers ----------------------------------------------------------------------------------
def worker(location: str, run_id: str, points: int, start_file: str) -> None:
    """One writer process: its own run, flushes of 1,000 steps x 10 metrics, from the moment
    `start_file` exists; prints the seconds it took."""
    storage = open_storage(location)
    storage.create_run(run_id, "bench", run_id, time.time(), {})
    steps_total = points // METRICS_PER_STEP
    flushes = []
    for first in range(0, steps_total, STEPS_PER_FLUSH):
        steps = list(range(first, min(first + STEPS_PER_FLUSH, steps_total)))
        values = _values(len(steps), first)
        flushes.append({f"m{k}": (steps, values) for k in range(METRICS_PER_STEP)})
    print("ready", flush=True)
    while not os.path.exists(start_file):
        time.sleep(0.001)
    began = time.perf_counter()
    for number, batch in enumerate(flushes):
        storage.write_batch(run_id, batch, run_fields={"total_steps": (number + 1) * 1000})
    print(f"{time.perf_counter() - began:.6f}", flush=True)
    storage.close()


def write_throughput(location: str, writers: int, points_each: int, tag: str) -> float:
    start_file = tempfile.mktemp(prefix="tracer-bench-start-")
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", location, f"{tag}-{writers}-{n}",
             str(points_each), start_file],
            stdout=subprocess.PIPE, text=True,
        )
        for n in range(writers)
    ]  # fmt: skip
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    began = time.perf_counter()
    Path(start_file).touch()
    for child in children:
        child.wait()
        assert child.returncode == 0
    elapsed = time.perf_counter() - began
    os.unlink(start_file)
    return writers * points_each / elapsed


# -- reads ------------------------------------------------------------------------------------
def fill(storage: StorageBackend, runs: int, steps: int) -> float:
    """`runs` runs of `steps` steps of "loss" (a NaN every 100,000 steps); points/s."""
    began = time.perf_counter()
    for n in range(runs):
        run_id = f"long-{n}"
        storage.create_run(run_id, "bench", run_id, time.time(), {})
        for first in range(0, steps, 100_000):
            chunk = list(range(first, min(first + 100_000, steps)))
            values = _values(len(chunk), first + n)
            values[0] = math.nan
            storage.write_metrics(run_id, {"loss": (chunk, values)})
        storage.update_run(run_id, status="finished", total_steps=steps, end_time=time.time())
    return runs * steps / (time.perf_counter() - began)


def timed(work: Callable[[], object]) -> list[float]:
    seconds = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - began)
    return seconds


def chart(storage: StorageBackend, runs: int) -> None:
    for n in range(runs):
        storage.get_metric_reduced(f"long-{n}", "loss", points=1000)


def chart_in_python(storage: StorageBackend, runs: int) -> None:
    for n in range(runs):
        steps, values = storage.get_metric_window(f"long-{n}", "loss")
        reduce_points(steps, values, 1000)


def figure(seconds: Sequence[float]) -> str:
    return f"{statistics.median(seconds):.3f} s ({min(seconds):.3f}-{max(seconds):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000-step runs, fewer points")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        location, run_id, points, start_file = args.worker
        worker(location, run_id, int(points), start_file)
        return
    steps = 100_000 if args.quick else 1_000_000
    points_per_config = 400_000 if args.quick else 4_000_000
    runs = 10
    server_module = _server_module()
    with server_module.running_server() as server, tempfile.TemporaryDirectory() as folder:
        env = server.environment()
        os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
        stores = {"PostgreSQL": env["TRACER_TEST_POSTGRES_URL"], "SQLite": str(Path(folder) / "s")}
        progress(
            f"PostgreSQL {server.bin_dir}, Python {platform.python_version()},"
            f" {os.cpu_count()} CPUs; {runs} runs x {steps:,} steps"
        )
        rows: list[tuple[str, dict[str, str], str]] = []
        for writers in WRITER_COUNTS:
            rates = {}
            for name, location in stores.items():
                progress(f"writing with {writers} process(es) to {name} ...")
                rate = write_throughput(location, writers, points_per_config // writers, name)
                rates[name] = f"{rate / 1e3:,.0f}k points/s"
            target = ">= 500k points/s" if writers == 4 else ""
            rows.append((f"write, {writers} writer process(es)", rates, target))
        opened = {name: open_storage(location) for name, location in stores.items()}
        fills = {}
        for name, storage in opened.items():
            progress(f"filling {name} with {runs} runs x {steps:,} steps ...")
            fills[name] = f"{fill(storage, runs, steps) / 1e3:,.0f}k points/s"
        rows.append((f"fill {runs} x {steps:,} steps (1 process, 100k-point writes)", fills, ""))
        measured: dict[str, dict[str, list[float]]] = {name: {} for name in opened}
        for name, storage in opened.items():
            progress(f"reading {name} ...")
            query = QueryEngine(storage=storage)
            measured[name]["history"] = timed(
                lambda s=storage: s.get_metric_arrays("long-0", "loss")
            )
            measured[name]["compare"] = timed(
                lambda q=query: q.compare_runs("long-0", "long-1", ["loss"])
            )
            measured[name]["chart"] = timed(lambda s=storage: chart(s, runs))
            measured[name]["chart_python"] = timed(lambda s=storage: chart_in_python(s, runs))
        for key, label, target in (
            ("history", f"history read, {steps:,} steps", "< 1 s"),
            ("compare", f"compare_runs, 2 x {steps:,} steps", ""),
            ("chart", f"chart of {runs} runs x {steps:,} steps (get_metric_reduced)", "< 0.5 s"),
            ("chart_python", "the same chart, window read + reduce_points in Python", ""),
        ):
            rows.append((label, {n: figure(measured[n][key]) for n in opened}, target))
        for storage in opened.values():
            storage.close()
    print("| measurement | PostgreSQL | SQLite (baseline) | ratio PG/SQLite | target |")
    print("|---|---|---|---|---|")
    for label, figures, target in rows:
        ratio = _ratio(figures["PostgreSQL"], figures["SQLite"])
        print(f"| {label} | {figures['PostgreSQL']} | {figures['SQLite']} | {ratio} | {target} |")


def _ratio(first: str, second: str) -> str:
    a, b = (float(text.split()[0].rstrip("k").replace(",", "")) for text in (first, second))
    return f"x{a / b:.2f}" if b else "-"


if __name__ == "__main__":
    main()
