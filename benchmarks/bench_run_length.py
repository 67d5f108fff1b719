"""How Tracer's writer keeps up with a flat-out loop as runs get longer and wider.

    python benchmarks/bench_run_length.py            # 100k, 300k, 1M, 3M steps (minutes)
    python benchmarks/bench_run_length.py --quick    # 10k, 30k, 100k steps (a smoke run)

Each case runs in a fresh interpreter (so peak RSS is the case's own): a loop that calls
`tracer.log({k scalars})` and `tracer.step()` as fast as it can, then `tracer.finish()`,
with the default configuration (online detection on, background writer), system sampling off.
The same process then reports: the loop's wall time, `finish()`'s, CPU time of all threads,
peak RSS, and points stored. Beside each Tracer case, the naive SQLite logger (executemany one
row per value, commit every 100 steps) runs the same loop in its own fresh interpreter.

Figures (issue 20's targets): (loop + finish) per step at every length within 1.25x of the
shortest run's; `finish()` <= 1 s; peak RSS of the 1M-step run <= 64 MB above the 100k run's;
points/s end to end >= 1,000,000 and >= 2x the naive logger; at 300 metrics per step
`finish()` <= 0.2 s after 20,000 steps. The table goes to stdout, progress to stderr; the
exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from tracer.analysis import QueryEngine

CHILD = textwrap.dedent(
    """
    import json, os, resource, sqlite3, sys, time
    kind, steps, width, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    names = [f"m{i}" for i in range(width)]
    names[0] = "loss"
    values = [{name: (i % 97) * 0.01 + j for j, name in enumerate(names)} for i in range(97)]
    if kind == "tracer":
        import tracer
        tracer.init(project="bench", storage_path=path, track_system_metrics=False)
        log, step = tracer.log, tracer.step
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(steps):
            log(dict(values[i % 97]))
            step()
        t1 = time.perf_counter()
        tracer.finish()
        t2 = time.perf_counter()
    else:
        conn = sqlite3.connect(os.path.join(path, "naive.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE rows (metric TEXT, step INTEGER, value REAL)")
        conn.execute("CREATE INDEX rows_by_series ON rows (metric, step)")
        insert = "INSERT INTO rows VALUES (?, ?, ?)"
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(steps):
            conn.executemany(insert, [(k, i, v) for k, v in values[i % 97].items()])
            if i % 100 == 99:
                conn.commit()
        t1 = time.perf_counter()
        conn.commit()
        conn.close()
        t2 = time.perf_counter()
    # VmHWM is this process image's own peak; ru_maxrss keeps the parent's peak across exec
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as status:
            peak_kb = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    print(json.dumps({
        "loop_s": t1 - t0, "finish_s": t2 - t1, "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": peak_kb / 1024,
    }))
    """
)


@dataclass(frozen=True)
class Case:
    steps: int
    width: int  # metrics per step


@dataclass(frozen=True)
class Result:
    loop_s: float
    finish_s: float
    cpu_s: float
    peak_rss_mb: float
    stored_steps: int
    total_steps: int

    def per_step_us(self, steps: int) -> float:
        return (self.loop_s + self.finish_s) / steps * 1e6

    def points_per_s(self, case: Case) -> float:
        return case.steps * case.width / (self.loop_s + self.finish_s)


def run_case(kind: str, case: Case) -> Result:
    with tempfile.TemporaryDirectory(prefix="tracer-run-length-") as tmp:
        completed = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(case.steps), str(case.width), tmp],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        stored = total = case.steps
        if kind == "tracer":  # read here, not in the child: reading would raise its peak RSS
            with QueryEngine(tmp) as query:
                (run,) = query.list_runs("bench")
                (loss,) = [
                    m for m in query.storage.list_metrics(run["run_id"]) if m["name"] == "loss"
                ]
                stored = loss["last_step"] + 1  # steps 0..last, each once (the tests check it)
                total = run["total_steps"]
    return Result(**measured, stored_steps=stored, total_steps=total)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10k-100k steps (smoke run)")
    parser.add_argument("--steps", type=int, nargs="*", help="run lengths to measure")
    args = parser.parse_args(argv)
    lengths = args.steps or (
        [10_000, 30_000, 100_000] if args.quick else [100_000, 300_000, 1_000_000, 3_000_000]
    )
    wide = [Case(max(lengths[0] // 5, 1_000), 30), Case(20_000 if not args.quick else 5_000, 300)]
    cases = [Case(n, 3) for n in lengths] + wide
    print(
        "| steps x metrics | (loop+finish)/step | vs first | finish() | peak RSS | CPU/step"
        " | points/s | naive points/s | Tracer/naive | stored steps / total_steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    shortest: float | None = None  # (loop + finish) per step of the shortest 3-metric run
    for case in cases:
        progress(f"{case.steps:,} steps x {case.width} metrics: Tracer, then naive sqlite3")
        ours, naive = run_case("tracer", case), run_case("naive", case)
        per_step = ours.per_step_us(case.steps)
        if case.width == 3 and shortest is None:
            shortest = per_step
        growth = f"{per_step / shortest:.2f}x" if case.width == 3 and shortest else "-"
        print(
            f"| {case.steps:,} x {case.width} | {per_step:.2f} us | {growth}"
            f" | {ours.finish_s:.2f} s | {ours.peak_rss_mb:.0f} MB"
            f" | {ours.cpu_s / case.steps * 1e6:.2f} us"
            f" | {ours.points_per_s(case):,.0f} | {naive.points_per_s(case):,.0f}"
            f" | {ours.points_per_s(case) / naive.points_per_s(case):.2f}x"
            f" | {ours.stored_steps:,} / {ours.total_steps:,} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
