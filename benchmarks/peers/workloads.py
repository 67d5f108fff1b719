"""The workloads run through every tool: logging cost, bytes on disk, durability, import time.

Every workload interleaves the tools round by round, the order rotating each round, so that
load from other processes on a shared machine hits all tools alike.
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from adapters import Adapter
from common import METRICS, checkpoint_sqlite, interleave, metric_values, new_dir, progress

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sizes:
    log_steps: int  # steps per logging-cost run
    slow_log_steps: int  # the same for tools listed in SLOW (see LoggingResult.steps)
    log_rounds: int
    kill_step: int  # SIGKILL once this many steps are logged...
    kill_after_s: float  # ...or after this long, whichever comes first
    kill_rate: float  # steps/s the child is paced at
    kill_rounds: int
    import_rounds: int
    grad_steps: int  # steps per column per round, a multiple of 100
    grad_rounds: int
    grad_width: int


FULL = Sizes(20_000, 1_000, 5, 10_000, 12.0, 1_000.0, 3, 5, 200, 5, 512)
QUICK = Sizes(5_000, 200, 3, 1_000, 3.0, 1_000.0, 2, 2, 100, 3, 256)

# MLflow's fluent log_metrics is one SQLAlchemy transaction per call (~10 ms here): 20,000
# steps would take minutes a round, so it logs fewer steps; its figures are per step.
SLOW = frozenset({"mlflow"})


# -- logging cost and bytes on disk -----------------------------------------------------------
@dataclass
class LoggingResult:
    steps: dict[str, int]
    per_step_s: dict[str, list[float]]
    finish_s: dict[str, list[float]]
    start_s: dict[str, list[float]]
    amortized_s: dict[str, list[float]]
    bytes_per_point: dict[str, float] = field(default_factory=dict)


def one_logging_run(
    adapter: Adapter, scratch: Path, steps: int
) -> tuple[float, float, float, Path]:
    run_dir = new_dir(scratch, f"{adapter.key}-")
    t0 = time.perf_counter()
    adapter.start(run_dir)
    t1 = time.perf_counter()
    for step in range(steps):
        adapter.log(step, metric_values(step))
    t2 = time.perf_counter()
    adapter.finish()
    t3 = time.perf_counter()
    return t1 - t0, (t2 - t1) / steps, t3 - t2, run_dir


def bench_logging(adapters: dict[str, Adapter], scratch: Path, sizes: Sizes) -> LoggingResult:
    steps = {k: sizes.slow_log_steps if k in SLOW else sizes.log_steps for k in adapters}
    progress(f"logging cost: {sizes.log_rounds} rounds, steps per run {steps}")
    last_dirs: dict[str, Path] = {}

    def runner(key: str) -> tuple[float, float, float]:
        start, per_step, finish, run_dir = one_logging_run(adapters[key], scratch, steps[key])
        read = adapters[key].read_back(run_dir)
        if read != steps[key]:
            progress(f"  WARNING {key}: read back {read} of {steps[key]} steps after finish()")
        last_dirs[key] = run_dir
        return start, per_step, finish

    samples = interleave({k: (lambda k=k: runner(k)) for k in adapters}, sizes.log_rounds)
    result = LoggingResult(
        steps=steps,
        start_s={k: [s[0] for s in v] for k, v in samples.items()},
        per_step_s={k: [s[1] for s in v] for k, v in samples.items()},
        finish_s={k: [s[2] for s in v] for k, v in samples.items()},
        amortized_s={k: [s[1] + s[2] / steps[k] for s in v] for k, v in samples.items()},
    )
    progress("bytes on disk: one empty run per tool, against the last logging run")
    for key, adapter in adapters.items():
        empty_dir = new_dir(scratch, f"{key}-empty-")
        adapter.start(empty_dir)
        adapter.finish()
        empty = files_bytes(adapter, empty_dir)
        full = files_bytes(adapter, last_dirs[key])
        result.bytes_per_point[key] = (full - empty) / (steps[key] * len(METRICS))
    return result


def files_bytes(adapter: Adapter, run_dir: Path) -> int:
    """Bytes of the files that hold the run, SQLite WALs checkpointed into their databases."""
    for path in adapter.files(run_dir):
        if path.suffix in (".db", ".sqlite") and path.stat().st_size > 0:
            checkpoint_sqlite(path)
    return sum(p.stat().st_size for p in adapter.files(run_dir) if p.exists())


# -- durability under SIGKILL -----------------------------------------------------------------
@dataclass(frozen=True)
class KillOutcome:
    logged: int  # steps whose log() had returned when the kill came
    read: int  # steps the tool's reader finds afterwards
    rate: float  # steps/s the child actually logged at
    status: str

    @property
    def lost_steps(self) -> int:
        return max(0, self.logged - self.read)

    @property
    def lost_s(self) -> float:
        return self.lost_steps / self.rate if self.rate > 0 else float("nan")


def kill_run(adapter: Adapter, scratch: Path, sizes: Sizes, env: dict[str, str]) -> KillOutcome:
    run_dir = new_dir(scratch, f"{adapter.key}-kill-")
    progress_file = run_dir.parent / f"{run_dir.name}.progress"
    progress_file.write_bytes(b"\0" * 8)
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "durability_child.py"),
            adapter.key,
            str(run_dir),
            str(progress_file),
            str(sizes.kill_rate),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: helpers (wandb-core) die with it
    )
    with open(progress_file, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 8)

        def logged() -> int:
            return int(struct.unpack("<q", shared[:8])[0])

        first_seen = None
        deadline = time.perf_counter() + 120.0
        while child.poll() is None and time.perf_counter() < deadline:
            count = logged()
            now = time.perf_counter()
            if count > 0 and first_seen is None:
                first_seen = now
            if count >= sizes.kill_step or (
                first_seen is not None and now - first_seen >= sizes.kill_after_s
            ):
                break
            time.sleep(0.002)
        os.killpg(child.pid, signal.SIGKILL)  # the child and every process it started
        child.wait()
        killed_at = time.perf_counter()
        final = logged()
    time.sleep(0.5)  # let the kernel reap the group before a reader opens the files
    rate = final / (killed_at - first_seen) if first_seen else 0.0
    try:
        read = adapter.read_back(run_dir)
    except Exception as error:
        progress(f"  {adapter.key}: reader failed after the kill: {type(error).__name__}: {error}")
        read = 0
    try:
        status = adapter.status_after_kill(run_dir)
    except Exception as error:
        status = f"unreadable ({type(error).__name__})"
    return KillOutcome(final, read, rate, status)


def bench_durability(
    adapters: dict[str, Adapter], scratch: Path, sizes: Sizes, env: dict[str, str]
) -> dict[str, list[KillOutcome]]:
    progress(
        f"durability: child paced at {sizes.kill_rate:.0f} steps/s, SIGKILL at step"
        f" {sizes.kill_step} or after {sizes.kill_after_s:.0f} s, {sizes.kill_rounds} rounds"
    )
    runs = {k: (lambda a=a: kill_run(a, scratch, sizes, env)) for k, a in adapters.items()}
    return interleave(runs, sizes.kill_rounds)


# -- import time ------------------------------------------------------------------------------
IMPORT_EXTRA = {"torch": "import torch"}


def python_wall(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_imports(
    adapters: dict[str, Adapter], sizes: Sizes, env: dict[str, str]
) -> dict[str, list[float]]:
    """`python -c IMPORT` minus `python -c pass` measured once at the start of each round."""
    codes = {k: a.import_code for k, a in adapters.items()} | IMPORT_EXTRA
    full_env = {**os.environ, **env}
    for code in codes.values():  # warm the file cache and the .pyc files
        python_wall(code, full_env)
    progress(f"import time: {sizes.import_rounds} rounds of {len(codes)} fresh interpreters")

    names = list(codes)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for round_index in range(sizes.import_rounds):
        empty = python_wall("pass", full_env)
        shift = round_index % len(names)
        for key in names[shift:] + names[:shift]:
            samples[key].append(python_wall(codes[key], full_env) - empty)
    return samples
