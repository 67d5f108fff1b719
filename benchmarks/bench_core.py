"""Tracer core benchmarks: every figure beside a baseline measured in the same run.

    python benchmarks/bench_core.py            # full run (about a minute on 2 cores)
    python benchmarks/bench_core.py --quick    # ~10x smaller, a smoke run

Measurements (see benchmarks/README.md for what each one means and why its target):
1. `tracer.log({3 scalars}) + tracer.step()` per step, default config (background writer on),
   wall time per block of steps, the writer thread's GIL share included; finish() time.
2. Metric points/s into SQLite through `StorageBackend.write_metrics`, and end to end through
   log/step, from the first log to `finish()` returning.
3. Bytes on disk per user metric point after a long run.
4. `import tracer` time in a fresh interpreter, and whether it imports torch.
5. Reading one metric's whole history of a long run with `get_metric_timeseries`.

Figures are medians with (min, max) over repeats; Tracer and baseline repeats are interleaved
so that load from other processes on a shared machine hits both alike. The table goes to
stdout, progress to stderr. The exit status is 0 whatever the figures, unless --strict.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, repeat
from pathlib import Path
from typing import TypeVar

import tracer
from tracer.config import TracerConfig
from tracer.storage import StorageBackend, open_storage

T = TypeVar("T")

HEADER = "| measurement | Tracer | baseline | ratio (Tracer/baseline) | target | pass/fail |"
METRICS = ("loss", "acc", "lr")
NAIVE_SCHEMA = (
    "CREATE TABLE rows (run_id INTEGER NOT NULL, metric_id INTEGER NOT NULL,"
    " step INTEGER NOT NULL, value REAL)",
    "CREATE INDEX rows_by_series ON rows (run_id, metric_id, step)",
)
NAIVE_INSERT = "INSERT INTO rows (run_id, metric_id, step, value) VALUES (?, ?, ?, ?)"
NAIVE_SELECT = "SELECT step, value FROM rows WHERE run_id = ? AND metric_id = ? ORDER BY step"


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; `--quick` divides it by about 10."""

    step_blocks: int
    steps_per_block: int
    throughput_points: int
    throughput_repeats: int
    long_run_steps: int
    read_repeats: int
    import_rounds: int


FULL = Sizes(30, 10_000, 3_000_000, 3, 1_000_000, 5, 15)
QUICK = Sizes(10, 3_000, 300_000, 2, 100_000, 3, 5)


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def scaled(self, factor: float) -> Stats:
        return Stats(self.median * factor, self.low * factor, self.high * factor, self.count)

    def show(self, unit: str, digits: int = 2) -> str:
        def num(value: float) -> str:
            return f"{value:,.{digits}f}"

        return f"{num(self.median)} {unit} ({num(self.low)}-{num(self.high)}, n={self.count})"


@dataclass(frozen=True)
class Row:
    measurement: str
    tracer: str
    baseline: str
    ratio: str
    target: str
    verdict: str


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ratio(tracer_value: float, baseline_value: float) -> str:
    return f"{tracer_value / baseline_value:,.2f}x" if baseline_value else "n/a"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- helpers ----------------------------------------------------------------------------------
def metric_values(i: int) -> tuple[float, float, float]:
    """Non-integral values (SQLite stores integral REALs as integers, which would flatter it)."""
    return 1.0 / (i + 1.5), 0.5 + i * 1e-7, 3e-4


def open_naive(path: Path) -> sqlite3.Connection:
    """The naive baseline: one row per point, indexed, with the same pragmas Tracer uses."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in NAIVE_SCHEMA:
        conn.execute(statement)
    conn.commit()
    return conn


def db_bytes(path: Path) -> int:
    """Bytes of an SQLite file and its WAL, after checkpointing the WAL into the file."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def storage_at(directory: str) -> StorageBackend:
    """`StorageBackend(config)`: the backend the storage_path selects (SQLite here)."""
    return open_storage(TracerConfig(project_name="bench", storage_path=directory))


def interleave(runs: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run each callable once per round, rotating the order; collect what each returns."""
    names = list(runs)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


# -- 1. per-step cost ---------------------------------------------------------------------------
Block = tuple[float, float, float]  # (wall s, process CPU s, of which the closing flush() s)


def tracer_block(start: int, count: int) -> Block:
    """`count` log+step calls through the public API, then `flush()`, all inside the timing.

    The background writer lags the training thread by a whole block or more (in a CPU-bound
    loop it gets the GIL only every switch interval), so without the flush a block would leave
    its writer work (pivoting, packing, SQLite) to whatever runs next: here a baseline block.
    """
    run = tracer.get_run()
    assert run is not None
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(start, start + count):
        loss, acc, lr = metric_values(i)
        tracer.log({"loss": loss, "acc": acc, "lr": lr})
        tracer.step()
    flush_start = time.perf_counter()
    if not run.flush():
        raise RuntimeError("Tracer's flush() timed out")
    end = time.perf_counter()
    return end - wall, time.process_time() - cpu, end - flush_start


def floor_block(start: int, count: int) -> Block:
    """The floor: build the same dict and append it to a list."""
    out: list[dict[str, float]] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(start, start + count):
        loss, acc, lr = metric_values(i)
        out.append({"loss": loss, "acc": acc, "lr": lr})
    return time.perf_counter() - wall, time.process_time() - cpu, 0.0


def naive_block(conn: sqlite3.Connection, start: int, count: int) -> Block:
    """Naive direct SQLite: executemany 3 rows per step, commit every 100 steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(start, start + count):
        loss, acc, lr = metric_values(i)
        conn.executemany(NAIVE_INSERT, ((1, 1, i, loss), (1, 2, i, acc), (1, 3, i, lr)))
        if i % 100 == 99:
            conn.commit()
    return time.perf_counter() - wall, time.process_time() - cpu, 0.0


def bench_per_step(sizes: Sizes) -> list[Row]:
    progress(
        f"1. log+step per step: {sizes.step_blocks} blocks x {sizes.steps_per_block:,} steps,"
        " Tracer / floor / naive sqlite3 interleaved"
    )
    n = sizes.steps_per_block
    with tempfile.TemporaryDirectory(prefix="tracer-bench-") as tmp:
        tracer.init(project="bench", storage_path=tmp)  # the default config otherwise
        conn = open_naive(Path(tmp) / "naive.db")
        started = {"tracer": 0, "floor": 0, "naive": 0}

        def block(name: str, run: Callable[[int], Block]) -> Block:
            result = run(started[name])
            started[name] += n
            return result

        samples = interleave(
            {
                "tracer": lambda: block("tracer", lambda s: tracer_block(s, n)),
                "floor": lambda: block("floor", lambda s: floor_block(s, n)),
                "naive": lambda: block("naive", lambda s: naive_block(conn, s, n)),
            },
            sizes.step_blocks,
        )
        t0 = time.perf_counter()
        tracer.finish()
        finish_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.commit()
        conn.close()
        naive_close_s = time.perf_counter() - t0

    def per_step(field: int) -> dict[str, Stats]:
        return {
            name: Stats.of([sample[field] for sample in blocks]).scaled(1e6 / n)
            for name, blocks in samples.items()
        }

    us, cpu_us, flush_us = per_step(0), per_step(1), per_step(2)
    steps = sizes.step_blocks * n
    total_tracer = (sum(b[0] for b in samples["tracer"]) + finish_s) / steps * 1e6
    total_naive = (sum(b[0] for b in samples["naive"]) + naive_close_s) / steps * 1e6
    tracer_med = us["tracer"].median
    return [
        Row(
            f"1a. log({{3 scalars}}) + step(), wall per step over blocks of {n:,} steps ending"
            " with flush(), so all the writer thread's work for the block is inside it"
            " — vs floor (same dict appended to a list)",
            us["tracer"].show("µs"),
            us["floor"].show("µs"),
            ratio(tracer_med, us["floor"].median),
            "median <= 5 µs",
            verdict(tracer_med <= 5.0),
        ),
        Row(
            "1b. of 1a: the flush() closing each block, i.e. writer work still queued at the"
            " block's end, done while the training thread waits — vs floor",
            flush_us["tracer"].show("µs"),
            us["floor"].show("µs"),
            ratio(flush_us["tracer"].median, us["floor"].median),
            "—",
            "info",
        ),
        Row(
            "1c. same Tracer figure as 1a — vs naive sqlite3 per step (executemany 3 rows,"
            " commit every 100 steps)",
            us["tracer"].show("µs"),
            us["naive"].show("µs"),
            ratio(tracer_med, us["naive"].median),
            "—",
            "info",
        ),
        Row(
            "1d. process CPU per step of 1a, all threads (training + writer) — vs floor",
            cpu_us["tracer"].show("µs"),
            cpu_us["floor"].show("µs"),
            ratio(cpu_us["tracer"].median, cpu_us["floor"].median),
            "—",
            "info",
        ),
        Row(
            f"1e. finish() after the {steps:,} steps of 1a (single) — vs naive final commit"
            " + close",
            f"{finish_s * 1e3:,.1f} ms",
            f"{naive_close_s * 1e3:,.1f} ms",
            ratio(finish_s, naive_close_s),
            "—",
            "info",
        ),
        Row(
            "1f. total wall per step of 1a, all blocks + finish() / steps — vs naive sqlite3"
            " (all blocks + close)",
            f"{total_tracer:,.2f} µs",
            f"{total_naive:,.2f} µs",
            ratio(total_tracer, total_naive),
            "—",
            "info",
        ),
    ]


# -- 2. write throughput ------------------------------------------------------------------------
def tracer_write(points: int, batch_steps: int) -> float:
    """Seconds to write `points` through write_metrics, len(METRICS) x batch_steps per call."""
    calls = points // (batch_steps * len(METRICS))
    values = [[metric_values(i)[m] for i in range(batch_steps)] for m in range(len(METRICS))]
    with tempfile.TemporaryDirectory(prefix="tracer-bench-") as tmp:
        storage = storage_at(tmp)
        try:
            storage.create_run("run-0", "bench", "throughput", time.time(), {})
            t0 = time.perf_counter()
            for call in range(calls):
                steps = list(range(call * batch_steps, (call + 1) * batch_steps))
                storage.write_metrics(
                    "run-0", {name: (steps, values[m]) for m, name in enumerate(METRICS)}
                )
            return time.perf_counter() - t0
        finally:
            storage.close()


def naive_write(points: int, batch_steps: int) -> float:
    """Seconds to executemany the same points as rows, one transaction per batch."""
    calls = points // (batch_steps * len(METRICS))
    values = [[metric_values(i)[m] for i in range(batch_steps)] for m in range(len(METRICS))]
    with tempfile.TemporaryDirectory(prefix="tracer-bench-") as tmp:
        conn = open_naive(Path(tmp) / "naive.db")
        try:
            t0 = time.perf_counter()
            for call in range(calls):
                first = call * batch_steps
                rows = chain.from_iterable(
                    zip(
                        repeat(1),
                        repeat(m + 1),
                        range(first, first + batch_steps),
                        values[m],
                        strict=False,
                    )
                    for m in range(len(METRICS))
                )
                conn.executemany(NAIVE_INSERT, rows)
                conn.commit()
            return time.perf_counter() - t0
        finally:
            conn.close()


def bench_write_throughput(sizes: Sizes) -> list[Row]:
    batch_steps = 1000
    points = sizes.throughput_points // (batch_steps * len(METRICS)) * batch_steps * len(METRICS)
    progress(
        f"2. write_metrics throughput: {points:,} points, {len(METRICS)} x {batch_steps} per"
        f" call, {sizes.throughput_repeats} interleaved repeats"
    )
    seconds = interleave(
        {
            "tracer": lambda: tracer_write(points, batch_steps),
            "naive": lambda: naive_write(points, batch_steps),
        },
        sizes.throughput_repeats,
    )
    rate = {name: Stats.of([points / s for s in samples]) for name, samples in seconds.items()}
    return [
        Row(
            f"2a. StorageBackend.write_metrics, points/s ({len(METRICS)} metrics x"
            f" {batch_steps} steps per call, {points:,} points) — vs raw sqlite3 executemany"
            " into an indexed (run_id, metric_id, step, value) table, 1 commit per batch",
            rate["tracer"].show("pts/s", 0),
            rate["naive"].show("pts/s", 0),
            ratio(rate["tracer"].median, rate["naive"].median),
            ">= 300,000 pts/s",
            verdict(rate["tracer"].median >= 300_000),
        )
    ]


# -- 2b, 3, 5. one long run, end to end; its size on disk; reading it back ----------------------
@dataclass
class LongRun:
    steps: int
    block_steps: int
    tracer_blocks: list[float]  # wall seconds per block of `block_steps` steps
    tracer_finish_s: float
    naive_blocks: list[float]
    naive_close_s: float
    run_id: str
    tracer_db: Path
    naive_db: Path

    @property
    def tracer_s(self) -> float:
        return sum(self.tracer_blocks) + self.tracer_finish_s

    @property
    def naive_s(self) -> float:
        return sum(self.naive_blocks) + self.naive_close_s


def block_starts(steps: int, block_steps: int) -> list[tuple[int, int]]:
    return [(start, min(block_steps, steps - start)) for start in range(0, steps, block_steps)]


def tracer_long_run(directory: str, steps: int, block_steps: int) -> tuple[list[float], float, str]:
    """(wall s per block, finish() s, run id): one continuous run, the writer left alone.

    A block's time includes whatever writer work the GIL gives the writer during it; what is
    still queued at the end is written inside finish(), which the mean counts.
    """
    run = tracer.init(project="bench", storage_path=directory)
    blocks: list[float] = []
    for start, count in block_starts(steps, block_steps):
        t0 = time.perf_counter()
        for i in range(start, start + count):
            loss, acc, lr = metric_values(i)
            tracer.log({"loss": loss, "acc": acc, "lr": lr})
            tracer.step()
        blocks.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    tracer.finish()
    return blocks, time.perf_counter() - t0, run.run_id


def naive_long_run(path: Path, steps: int, block_steps: int) -> tuple[list[float], float]:
    """The same steps through the naive per-step sqlite3 loop; (s per block, commit+close s)."""
    conn = open_naive(path)
    starts = block_starts(steps, block_steps)
    blocks = [naive_block(conn, start, count)[0] for start, count in starts]
    t0 = time.perf_counter()
    conn.commit()
    conn.close()
    return blocks, time.perf_counter() - t0


def check_long_run(directory: str, run_id: str, steps: int) -> None:
    """The data is durable and complete: every metric has every step."""
    storage = storage_at(directory)
    try:
        for name in METRICS:
            series = storage.get_metric_timeseries(run_id, name)
            if len(series["steps"]) != steps or series["steps"][-1] != steps - 1:
                raise SystemExit(f"Tracer lost points of {name!r}: {len(series['steps'])}/{steps}")
    finally:
        storage.close()


def bench_end_to_end(long_run: LongRun) -> list[Row]:
    points = long_run.steps * len(METRICS)
    tracer_rate = points / long_run.tracer_s
    naive_rate = points / long_run.naive_s
    per_step = 1e6 / long_run.block_steps
    tracer_us = Stats.of(long_run.tracer_blocks).scaled(per_step)
    naive_us = Stats.of(long_run.naive_blocks).scaled(per_step)
    tracer_mean = long_run.tracer_s / long_run.steps * 1e6
    naive_mean = long_run.naive_s / long_run.steps * 1e6
    return [
        Row(
            f"1g. log + step in one continuous {long_run.steps:,}-step run (the run of 2b),"
            " no flush: the writer runs as in training (lagging thousands of steps behind,"
            " its SQLite calls partly on the second core). Mean ="
            " (all blocks + finish()) / steps; in brackets the median (min-max) over blocks of"
            f" {long_run.block_steps:,} — vs naive sqlite3 per step, same blocks (run after,"
            " not interleaved)",
            f"mean {tracer_mean:,.2f} µs [{tracer_us.show('µs')}]",
            f"mean {naive_mean:,.2f} µs [{naive_us.show('µs')}]",
            ratio(tracer_mean, naive_mean),
            "—",
            "info",
        ),
        Row(
            f"2b. end to end: {long_run.steps:,} steps x {len(METRICS)} metrics through"
            " log/step, first log to finish() returning (single run) — vs naive sqlite3"
            " per step (executemany, commit every 100) to close",
            f"{tracer_rate:,.0f} pts/s ({long_run.tracer_s:,.2f} s)",
            f"{naive_rate:,.0f} pts/s ({long_run.naive_s:,.2f} s)",
            ratio(tracer_rate, naive_rate),
            "—",
            "info",
        ),
    ]


def bench_bytes(long_run: LongRun) -> list[Row]:
    points = long_run.steps * len(METRICS)
    tracer_bytes = db_bytes(long_run.tracer_db)
    naive_bytes = db_bytes(long_run.naive_db)
    per_tracer = tracer_bytes / points
    per_naive = naive_bytes / points
    return [
        Row(
            f"3. bytes on disk per user metric point ({long_run.steps:,} steps x"
            f" {len(METRICS)} metrics; whole file, WAL checkpointed; Tracer's bytes include its"
            " hidden _timestamp series, run row and checkpoints, which are not counted as"
            " points) — vs naive indexed row table",
            f"{per_tracer:,.2f} B/pt ({tracer_bytes / 1e6:,.1f} MB)",
            f"{per_naive:,.2f} B/pt ({naive_bytes / 1e6:,.1f} MB)",
            ratio(per_tracer, per_naive),
            "<= 32 B/pt",
            verdict(per_tracer <= 32),
        )
    ]


def bench_read(long_run: LongRun, repeats: int) -> list[Row]:
    progress(f"5. reading one metric of the {long_run.steps:,}-step run, {repeats} repeats")
    storage = storage_at(str(long_run.tracer_db.parent))
    conn = sqlite3.connect(long_run.naive_db)

    def tracer_read() -> float:
        t0 = time.perf_counter()
        series = storage.get_metric_timeseries(long_run.run_id, "loss")
        elapsed = time.perf_counter() - t0
        assert len(series["values"]) == long_run.steps
        return elapsed

    def naive_read() -> float:
        t0 = time.perf_counter()
        rows = conn.execute(NAIVE_SELECT, (1, 1)).fetchall()
        elapsed = time.perf_counter() - t0
        assert len(rows) == long_run.steps
        return elapsed

    try:
        seconds = interleave({"tracer": tracer_read, "naive": naive_read}, repeats)
    finally:
        storage.close()
        conn.close()
    stats = {name: Stats.of(samples) for name, samples in seconds.items()}
    return [
        Row(
            f"5. read one metric's history of a {long_run.steps:,}-step run:"
            " get_metric_timeseries — vs SELECT step, value ... ORDER BY step fetchall"
            " from the naive indexed table",
            stats["tracer"].show("s", 3),
            stats["naive"].show("s", 3),
            ratio(stats["tracer"].median, stats["naive"].median),
            "median < 0.5 s",
            verdict(stats["tracer"].median < 0.5),
        )
    ]


def bench_long_run(sizes: Sizes) -> list[Row]:
    steps = sizes.long_run_steps
    progress(f"2b/3. a {steps:,}-step run through log/step, then the same through naive sqlite3")
    with tempfile.TemporaryDirectory(prefix="tracer-bench-") as tmp:
        tracer_dir = Path(tmp) / "tracer"
        block_steps = sizes.steps_per_block
        tracer_blocks, finish_s, run_id = tracer_long_run(str(tracer_dir), steps, block_steps)
        naive_db = Path(tmp) / "naive.db"
        naive_blocks, close_s = naive_long_run(naive_db, steps, block_steps)
        check_long_run(str(tracer_dir), run_id, steps)
        long_run = LongRun(
            steps,
            block_steps,
            tracer_blocks,
            finish_s,
            naive_blocks,
            close_s,
            run_id,
            tracer_dir / "tracer.db",
            naive_db,
        )
        return [
            *bench_end_to_end(long_run),
            *bench_bytes(long_run),
            *bench_read(long_run, sizes.read_repeats),
        ]


# -- 4. import time -----------------------------------------------------------------------------
def python_wall(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def self_reported_import_us(module: str, env: dict[str, str]) -> int:
    """Cumulative µs of `module` from `python -X importtime`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    for line in reversed(done.stderr.splitlines()):
        fields = [field.strip() for field in line.split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1])
    raise RuntimeError(f"no importtime line for {module}")


def heavy_modules_after_import(env: dict[str, str]) -> list[str]:
    code = (
        "import sys, tracer; heavy = ('torch', 'numpy', 'pydantic', 'sqlite3', 'pluggy');"
        " print(','.join(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True
    )
    return [name for name in done.stdout.strip().split(",") if name]


def bench_import(sizes: Sizes) -> list[Row]:
    rounds = sizes.import_rounds
    progress(f"4. import time: {rounds} interleaved rounds of fresh interpreters")
    env = dict(os.environ)
    codes = {
        "pass": "pass",
        "tracer": "import tracer",
        "json": "import json",
        "sqlite3": "import sqlite3",
        "logging": "import logging",
    }
    python_wall("import tracer", env)  # warm the OS cache and the bytecode cache first
    raw = interleave(
        {name: partial(python_wall, code, env) for name, code in codes.items()}, rounds
    )
    extra = {
        name: Stats.of([t - p for t, p in zip(raw[name], raw["pass"], strict=True)]).scaled(1e3)
        for name in codes
        if name != "pass"
    }
    reported = interleave(
        {
            "tracer": lambda: self_reported_import_us("tracer", env),
            "json": lambda: self_reported_import_us("json", env),
        },
        max(3, rounds // 3),
    )
    reported_ms = {name: Stats.of(samples).scaled(1e-3) for name, samples in reported.items()}
    heavy = heavy_modules_after_import(env)
    torch_free = "torch" not in heavy
    tracer_ms = extra["tracer"]
    return [
        Row(
            "4a. import tracer, fresh interpreter: wall(python -c 'import X') minus"
            " wall(python -c 'pass'), paired per round — vs import json",
            tracer_ms.show("ms", 1),
            extra["json"].show("ms", 1),
            ratio(tracer_ms.median, extra["json"].median),
            "median < 150 ms",
            verdict(tracer_ms.median < 150),
        ),
        Row(
            "4b. same Tracer figure — vs import sqlite3 / import logging",
            tracer_ms.show("ms", 1),
            f"sqlite3 {extra['sqlite3'].show('ms', 1)}; logging {extra['logging'].show('ms', 1)}",
            ratio(tracer_ms.median, extra["sqlite3"].median) + " (vs sqlite3)",
            "—",
            "info",
        ),
        Row(
            "4c. import tracer, self-reported by python -X importtime (cumulative)"
            " — vs import json",
            reported_ms["tracer"].show("ms", 1),
            reported_ms["json"].show("ms", 1),
            ratio(reported_ms["tracer"].median, reported_ms["json"].median),
            "—",
            "info",
        ),
        Row(
            "4d. 'torch' not in sys.modules after import tracer"
            f" (heavy modules loaded: {', '.join(heavy) or 'none'})",
            "yes" if torch_free else "no",
            "—",
            "—",
            "yes",
            verdict(torch_free),
        ),
    ]


# -- output -------------------------------------------------------------------------------------
def render(rows: Iterable[Row]) -> str:
    lines = [HEADER, "|---|---|---|---|---|---|"]
    for row in rows:
        cells = (row.measurement, row.tracer, row.baseline, row.ratio, row.target, row.verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def environment() -> str:
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" tracer {tracer.__version__}, {os.cpu_count()} CPUs, {platform.platform()}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~10x smaller sizes (smoke run)")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any figure misses its target"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    rows: list[Row] = []
    for bench in (bench_per_step, bench_write_throughput, bench_long_run, bench_import):
        rows.extend(bench(sizes))
    rows.sort(key=lambda row: row.measurement.split(" ", 1)[0])  # "1a." ... "5."
    elapsed = time.perf_counter() - started
    print(f"Tracer core benchmarks{' (--quick)' if args.quick else ''}: {environment()}")
    print(
        "Figures: median (min-max, n=repeats). Ratio is Tracer / baseline: for times and"
        " bytes lower is better for Tracer, for points/s higher is."
    )
    print()
    print(render(rows))
    print()
    failed = [row.measurement.split(" ", 1)[0].rstrip(".") for row in rows if row.verdict == "FAIL"]
    print(f"Targets missed: {', '.join(failed) if failed else 'none'}. Took {elapsed:,.0f} s.")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
