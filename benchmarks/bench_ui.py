"""The dashboard's API through its real HTTP server (`tracer ui` in a child process, urllib
here), over a store written straight through the storage API.

The store: 200 runs of 5 series x 10,000 steps (config, a few anomalies each) and 10 runs of
5 series x 1,000,000 steps (plus the `_timestamp` series real runs have), each long one with
a spike at one step and a NaN at another. Targets: the runs view < 300 ms; a 1M-step series
at points=1000 < 300 ms and < 100 KB; the 10 long runs compared on one metric < 1 s; and the
spike and the NaN present in every reduced answer, at every zoom level.

    python benchmarks/bench_ui.py            # the full store (about 500 MB, a minute to write)
    python benchmarks/bench_ui.py --quick    # a small smoke version
    python benchmarks/bench_ui.py --storage DIR --keep   # write there, keep it afterwards

Needs `tracer-core[ui]` (starlette, uvicorn). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tracer.records import AnomalyWrite
from tracer.storage.sqlite import SQLiteStorage

SERIES = ("loss", "acc", "grad/global_norm", "lr", "throughput")
CHUNK = 10_000  # steps per write: one stored chunk, as a writer flush makes
REPEATS = 5


def pattern(seed: int, length: int = CHUNK) -> list[float]:
    rng = random.Random(seed)
    return [1.0 + 0.1 * rng.random() for _ in range(length)]


def anomaly(run_id: str, step: int, kind: str, severity: str, value: float) -> AnomalyWrite:
    return {
        "run_id": run_id, "step": step, "anomaly_type": kind, "severity": severity,
        "subject": "loss", "value": value, "baseline": 1.0, "threshold": 2.0,
        "message": f"{kind} at step {step}", "detector": "bench", "end_step": step,
        "count": 1, "open": False, "hint": "",
    }  # fmt: skip


def write_store(location: Path, short_runs: int, short_steps: int, long_runs: int,
                long_steps: int) -> dict[str, Any]:  # fmt: skip
    """Write the store; returns the long runs' ids and their spike and NaN steps."""
    storage = SQLiteStorage(str(location))
    noise = [pattern(i) for i in range(len(SERIES))]
    now = time.time()
    try:
        for index in range(short_runs):
            run_id = f"short{index:04d}"
            storage.create_run(
                run_id, f"project{index % 4}", f"short-{index}", now - 10_000 + index,
                {"lr": 10 ** -(index % 5), "batch": 32 * (1 + index % 3), "seed": index},
                tags=["sweep"],
            )  # fmt: skip
            _write_series(storage, run_id, short_steps, noise, now, None, None)
            storage.write_anomalies(
                [
                    anomaly(run_id, short_steps // (k + 2), "loss_spike", "warning", 9.0)
                    for k in range(index % 4)
                ]
            )
            storage.update_run(run_id, status="finished", total_steps=short_steps, end_time=now)
        long_ids = []
        spikes, nans = {}, {}
        for index in range(long_runs):
            run_id = f"long{index:02d}"
            spike = long_steps // 3 + 7919 * index % (long_steps // 10)
            nan = 2 * long_steps // 3 + 104729 * index % (long_steps // 10)
            storage.create_run(
                run_id, "long", f"long-{index}", now - 1000 + index, {"lr": 0.1, "run": index}
            )
            _write_series(storage, run_id, long_steps, noise, now, spike, nan)
            storage.write_anomalies(
                [
                    anomaly(run_id, spike, "loss_spike", "warning", 50.0),
                    anomaly(run_id, nan, "nan_or_inf", "critical", math.nan),
                ]
            )
            storage.update_run(run_id, status="finished", total_steps=long_steps, end_time=now)
            long_ids.append(run_id)
            spikes[run_id], nans[run_id] = spike, nan
    finally:
        storage.close()
    return {"long": long_ids, "spike": spikes, "nan": nans}


def _write_series(storage: SQLiteStorage, run_id: str, steps: int, noise: list[list[float]],
                  start: float, spike: int | None, nan: int | None) -> None:  # fmt: skip
    for first in range(0, steps, CHUNK):
        last = min(first + CHUNK, steps)
        step_list = list(range(first, last))
        points: dict[str, tuple[list[int], list[float]]] = {
            "_timestamp": (step_list, [start + 0.01 * s for s in step_list])
        }
        for number, name in enumerate(SERIES):
            values = noise[number][: last - first]
            if name == "loss" and spike is not None and first <= spike < last:
                values = list(values)
                values[spike - first] = 50.0
            if name == "loss" and nan is not None and first <= nan < last:
                values = list(values)
                values[nan - first] = math.nan
            points[name] = (step_list, values)
        storage.write_metrics(run_id, points)


class Server:
    """`python -m tracer ui` on a free port, in a child process."""

    def __init__(self, location: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracer", "ui", "--storage", str(location), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            raise SystemExit(f"tracer ui did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].split()[0].rstrip("/")

    def get(self, path: str) -> tuple[float, int, Any]:
        """(seconds, bytes, parsed JSON) of one request."""
        started = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=120) as response:
            body = response.read()
        elapsed = time.perf_counter() - started
        return elapsed, len(body), json.loads(body)

    def timed(self, path: str) -> tuple[float, int, Any]:
        """The median of `REPEATS` requests after one warm-up."""
        self.get(path)
        runs = [self.get(path) for _ in range(REPEATS)]
        return statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def zoom_checks(server: Server, run_id: str, spike: int, nan: int, steps: int) -> list[str]:
    """Spike and NaN in every reduced answer around them, from the whole run to 100 steps."""
    failures = []
    for target, name in ((spike, "spike"), (nan, "NaN")):
        half = steps
        while half >= 50:
            start, end = max(target - half, 0), min(target + half, steps - 1)
            _, _, payload = server.get(
                f"/api/runs/{run_id}/series?metric=loss&points=1000&start={start}&end={end}"
            )
            kept = dict(zip(payload["steps"], payload["values"], strict=True))
            seen_spike = not (start <= spike <= end) or kept.get(spike) == 50.0
            seen_nan = (
                not (start <= nan <= end) or {"step": nan, "kind": "NaN"} in payload["nonfinite"]
            )
            if not (seen_spike and seen_nan):
                failures.append(f"{name} window [{start}, {end}]")
            half //= 10
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small store (a smoke run)")
    parser.add_argument("--storage", help="write the store here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args()
    sizes = (10, 1000, 2, 100_000) if args.quick else (200, 10_000, 10, 1_000_000)
    short_runs, short_steps, long_runs, long_steps = sizes
    root = Path(args.storage) if args.storage else Path(tempfile.mkdtemp(prefix="bench-ui-"))
    location = root / "store"
    started = time.perf_counter()
    if not (location / "tracer.db").exists():
        layout = write_store(location, short_runs, short_steps, long_runs, long_steps)
        (root / "layout.json").write_text(json.dumps(layout))
    layout = json.loads((root / "layout.json").read_text())
    written = time.perf_counter() - started
    size_mb = os.path.getsize(location / "tracer.db") / 1e6
    server = Server(location)
    try:
        first = layout["long"][0]
        runs_s, runs_bytes, runs = server.timed("/api/runs")
        series_s, series_bytes, one = server.timed(
            f"/api/runs/{first}/series?metric=loss&points=1000"
        )
        view_s, _, _ = server.timed(f"/api/runs/{first}")
        compare_s, compare_bytes, compared = server.timed(
            f"/api/compare?runs={','.join(layout['long'])}&metric=loss&points=1000"
        )
        failures = []
        for run_id in layout["long"]:
            failures += zoom_checks(
                server, run_id, layout["spike"][run_id], layout["nan"][run_id], long_steps
            )
    finally:
        server.close()
        if not args.keep and not args.storage:
            shutil.rmtree(root, ignore_errors=True)
    total_runs = short_runs + long_runs
    assert len(runs["runs"]) == total_runs and one["count"] == long_steps
    assert len(compared["series"]) == long_runs
    rows = [
        ("runs view (`/api/runs`)", f"{runs_s * 1000:.0f} ms, {runs_bytes / 1e3:.0f} KB",
         "< 300 ms", runs_s < 0.3),
        (f"series of {long_steps:,} steps, points=1000", f"{series_s * 1000:.0f} ms",
         "< 300 ms", series_s < 0.3),
        ("its size", f"{series_bytes / 1e3:.1f} KB", "< 100 KB", series_bytes < 100_000),
        (f"compare {long_runs} long runs on loss", f"{compare_s * 1000:.0f} ms,"
         f" {compare_bytes / 1e3:.0f} KB", "< 1 s", compare_s < 1.0),
        ("run view (`/api/runs/<run>`), long run", f"{view_s * 1000:.0f} ms", "-", True),
        ("spike and NaN kept at every zoom", f"{len(failures)} misses", "0", not failures),
    ]  # fmt: skip
    print(
        f"\nStore: {short_runs} runs x {len(SERIES)} series x {short_steps:,} steps +"
        f" {long_runs} runs x {len(SERIES)} series x {long_steps:,} steps;"
        f" {size_mb:.0f} MB, written in {written:.1f} s. Median of {REPEATS} requests.\n"
    )
    print("| measurement | figure | target | result |")
    print("|---|---|---|---|")
    for name, figure, target, ok in rows:
        print(f"| {name} | {figure} | {target} | {'PASS' if ok else 'FAIL'} |")
    for failure in failures[:10]:
        print(f"missed: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
