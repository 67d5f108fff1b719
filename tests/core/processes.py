"""Real child Python processes for the lifecycle and reliability tests: start one from a
script, wait for it, and read what it left in `<tmp_path>/store/tracer.db`.

The children import only `tracer`, so the tests using them run where torch is not installed.
Import `kill_leftover_children` into a test module: it is an autouse fixture.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracer.config import TracerConfig
from tracer.storage import RunRecord, StorageBackend, open_storage

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX fork and signals")

PROJECT = "p"
CHILD_TIMEOUT_S = 120.0  # generous: the machine may be shared and slow
POLL_TIMEOUT_S = 60.0
SIGNAL_EXIT_TIMEOUT_S = 60.0  # finishing takes well under a second; a hang must not take 2 min
LOSS_WINDOW_LIMIT_S = 1.5  # the contract: about one flush interval (1 s) lost to SIGKILL

# Environment variables that would change what a child does (see tracer.core.tracer/config).
_TRACER_ENV = ("TRACER_MODE", "TRACER_STORAGE_PATH")


# -- children -------------------------------------------------------------------------------
@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = CHILD_TIMEOUT_S) -> Finished:
        try:
            returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"child did not exit within {timeout:.0f} s; stderr:\n{self.stderr()}")
        return Finished(returncode, self.stdout_path.read_text(errors="replace"), self.stderr())


_started: list[Child] = []


@pytest.fixture(autouse=True)
def kill_leftover_children() -> Iterator[None]:
    """A failed test must not leave an endless training loop behind."""
    yield
    while _started:
        child = _started.pop()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in _TRACER_ENV:
        env.pop(name, None)
    return env


def start_child(script: str, tmp_path: Path, *args: str, name: str = "child") -> Child:
    """Start `script` (dedented) in a new interpreter: argv[1] is the storage path."""
    script_path = tmp_path / f"{name}.py"
    script_path.write_text(textwrap.dedent(script))
    stdout_path = tmp_path / f"{name}.stdout"
    stderr_path = tmp_path / f"{name}.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script_path), str(storage_dir(tmp_path)), *args],
            stdout=out,
            stderr=err,
            env=child_env(),
            cwd=tmp_path,
        )
    child = Child(proc, stdout_path, stderr_path)
    _started.append(child)
    return child


def run_child(
    script: str, tmp_path: Path, *args: str, timeout: float = CHILD_TIMEOUT_S
) -> Finished:
    """Run `script` to its end and return its exit status and output."""
    return start_child(script, tmp_path, *args).wait(timeout)


def wait_until(
    condition: Callable[[], bool], child: Child, what: str, timeout: float = POLL_TIMEOUT_S
) -> None:
    """Poll `condition`; fail early if the child exits first, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child.proc.poll() is not None:
            pytest.fail(f"child exited ({child.proc.returncode}) before {what}:\n{child.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# -- reading the database ---------------------------------------------------------------------
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def database(tmp_path: Path) -> Path:
    return storage_dir(tmp_path) / "tracer.db"


@contextmanager
def reader(tmp_path: Path) -> Iterator[StorageBackend]:
    """The storage API a user reads with (`open_storage` is `StorageBackend(config)`)."""
    storage = open_storage(
        TracerConfig(project_name=PROJECT, storage_path=str(storage_dir(tmp_path)))
    )
    try:
        yield storage
    finally:
        storage.close()


def stored_points(tmp_path: Path, metric: str = "loss") -> int:
    """Points of `metric` committed so far, all runs together; read-only, 0 before the schema."""
    db = database(tmp_path)
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute(
                "SELECT coalesce(sum(count), 0) FROM series WHERE name = ?", (metric,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet, or not in WAL mode yet
        return 0
    return int(row[0])


def integrity(tmp_path: Path) -> str:
    conn = sqlite3.connect(database(tmp_path), timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def only_run(tmp_path: Path) -> RunRecord:
    with reader(tmp_path) as storage:
        runs = storage.list_runs(PROJECT)
    assert len(runs) == 1, runs
    return runs[0]


def series(tmp_path: Path, run_id: str, metric: str = "loss") -> tuple[list[int], list[float]]:
    with reader(tmp_path) as storage:
        points = storage.get_metric_timeseries(run_id, metric)
    return list(points["steps"]), list(points["values"])


def assert_contiguous(tmp_path: Path, run: RunRecord, metric: str = "loss") -> list[int]:
    """The metric holds exactly steps 0..total_steps-1, once each; returns the steps."""
    steps, _ = series(tmp_path, run["run_id"], metric)
    assert steps == list(range(run["total_steps"])), (len(steps), run["total_steps"])
    return steps
