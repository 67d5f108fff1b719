"""Hostile environments, proved against real processes and real files: a fork of a process
with an open run, another process holding the database's write lock, a store removed or
replaced while a run writes, a foreign SQLite file, a read-only store, and storage that fails
at chosen points (the fault-injection harness in `tests/core/faulty_sqlite.py`).

The crash and signal contracts (SIGKILL, SIGTERM, exceptions, concurrency) are in
`test_lifecycle_subprocess.py`; both use the child-process helpers of `processes.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tests.core.faulty_sqlite import FaultPlan, inject, stop
from tests.core.helpers import open_store, points_stored
from tests.core.processes import (
    PROJECT,
    child_env,
    kill_leftover_children,  # noqa: F401  (an autouse fixture)
    posix_only,
    reader,
    run_child,
    series,
    start_child,
    wait_until,
)
from tracer.core.tracer import FINISH_TIMEOUT_S, TrainingTracer
from tracer.exceptions import StorageError
from tracer.storage.sqlite.connection import APPLICATION_ID, LOCK_WAIT_S
from tracer.storage.sqlite.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow


# -- fork ---------------------------------------------------------------------------------------
# argv: storage, how the child ends (exit0 / return / raise / init / kill-parent), a JSON
# report file the parent writes: the child's exit status and the run's stored status while
# the parent still trains after the child is gone.
FORKING_TRAINING = """
    import json, os, signal, sqlite3, sys
    import tracer

    storage, mode, report = sys.argv[1:4]
    run = tracer.init("p", storage_path=storage, run_name="parent", flush_interval=0.05)
    for step in range(50):
        tracer.log({"loss": 1.0 / (step + 1)})
        tracer.step()
    pid = os.fork()
    if pid == 0:  # the child: logs into the inherited run are dropped (warned once)
        tracer.log({"loss": 123.0})
        tracer.step()
        assert tracer.get_run() is run and run.state == "forked"
        if mode == "init":
            tracer.init("p", storage_path=storage, run_name="child")
            for step in range(5):
                tracer.log({"loss": 7.0})
                tracer.step()
            tracer.finish()
        if mode == "exit0":
            sys.exit(0)
        if mode == "raise":
            raise RuntimeError("the child's own error")
    else:
        _, status = os.waitpid(pid, 0)
        run.flush()
        db = sqlite3.connect(os.path.join(storage, "tracer.db"))
        stored = db.execute("SELECT status FROM runs WHERE id = ?", (run.run_id,)).fetchone()
        db.close()
        with open(report, "w") as out:
            json.dump({"child_exit": os.waitstatus_to_exitcode(status), "status": stored[0]}, out)
        for step in range(50, 100):
            tracer.log({"loss": 1.0 / (step + 1)})
            tracer.step()
        if mode == "kill-parent":
            run.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        tracer.finish()
"""


@posix_only
@pytest.mark.parametrize("mode", ["exit0", "return", "raise", "init"])
def test_a_forked_child_leaves_the_parents_run_untouched(tmp_path: Path, mode: str) -> None:
    """A child forked after `tracer.init` that exits, returns, raises or starts its own run:
    the parent's run still reads "running" once the child is gone, ends "finished" with
    exactly the parent's 100 steps (nothing the child logged), and a child's own run is a
    separate, finished run."""
    report = tmp_path / "report.json"
    finished = run_child(FORKING_TRAINING, tmp_path, mode, str(report), timeout=60)
    assert finished.returncode == 0, finished.stderr
    seen = json.loads(report.read_text())
    assert seen == {"child_exit": 1 if mode == "raise" else 0, "status": "running"}
    assert "was forked from the one running run" in finished.stderr
    with reader(tmp_path) as storage:
        runs = {run["run_name"]: run for run in storage.list_runs(PROJECT)}
    parent = runs.pop("parent")
    assert (parent["status"], parent["error"], parent["total_steps"]) == ("finished", None, 100)
    steps, losses = series(tmp_path, parent["run_id"])
    assert steps == list(range(100))
    assert losses == [1.0 / (step + 1) for step in range(100)]
    if mode == "init":
        child = runs.pop("child")
        assert (child["status"], child["total_steps"]) == ("finished", 5)
        assert series(tmp_path, child["run_id"]) == (list(range(5)), [7.0] * 5)
    assert runs == {}


@posix_only
def test_a_parent_killed_after_its_child_exited_reads_crashed(tmp_path: Path) -> None:
    """The child's exit must not have marked the run finished: SIGKILL of the parent later
    leaves a run that readers see as crashed, with everything flushed before the kill."""
    report = tmp_path / "report.json"
    finished = run_child(FORKING_TRAINING, tmp_path, "kill-parent", str(report))
    assert finished.returncode == -signal.SIGKILL, finished.stderr
    assert json.loads(report.read_text()) == {"child_exit": 0, "status": "running"}
    with reader(tmp_path) as storage:
        runs = [r for r in storage.list_runs(PROJECT) if r["status"] == "crashed"]
    assert len(runs) == 1
    assert series(tmp_path, runs[0]["run_id"])[0] == list(range(100))


# argv: storage, forks, metrics per step. A busy writer (flush every 10 ms, many metrics)
# forks repeatedly: each child does a little work and leaves with sys.exit(0), which runs
# the atexit handlers it inherited. Each must exit at once.
BUSY_FORKS = """
    import os, sys, time
    import tracer

    storage, forks, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tracer.init("p", storage_path=storage, flush_interval=0.01, write_buffer_size=10)
    slowest = 0.0
    for step in range(forks * 5):
        tracer.log({f"m{i}": float(step + i) for i in range(width)})
        tracer.step()
        if step % 5 == 0:
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                sum(range(1000))
                sys.exit(0)
            deadline = start + 10
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.001)
            else:
                os.kill(pid, 9)
                print("HUNG", pid, flush=True)
                os.waitpid(pid, 0)
            slowest = max(slowest, time.monotonic() - start)
    tracer.finish()
    print("SLOWEST", slowest)
"""


@posix_only
def test_children_forked_from_a_busy_writer_exit_at_once(tmp_path: Path) -> None:
    """40 forks while the writer flushes 200 metrics every 10 ms: no child hangs at exit (a
    lock the writer thread held at the fork stays held in the child forever)."""
    finished = run_child(BUSY_FORKS, tmp_path, "40", "200", timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "HUNG" not in finished.stdout
    slowest = float(finished.stdout.split("SLOWEST")[1])
    assert slowest < 5.0
    with reader(tmp_path) as storage:
        (run,) = storage.list_runs(PROJECT)
    assert (run["status"], run["total_steps"]) == ("finished", 200)


# argv: storage. multiprocessing's fork start method, as a Pool of training helpers.
MULTIPROCESSING_FORK = """
    import multiprocessing, sys
    import tracer

    def work(value):
        tracer.log({"loss": float(value)})  # inherited run: dropped, never raises
        return value * 2

    if __name__ == "__main__":
        tracer.init("p", storage_path=sys.argv[1])
        with multiprocessing.get_context("fork").Pool(2) as pool:
            for step in range(5):
                assert pool.map(work, range(4)) == [0, 2, 4, 6]
                tracer.log({"loss": float(step)})
                tracer.step()
        tracer.finish()
"""


@posix_only
def test_a_multiprocessing_fork_pool_does_not_touch_the_run(tmp_path: Path) -> None:
    finished = run_child(MULTIPROCESSING_FORK, tmp_path, timeout=60)
    assert finished.returncode == 0, finished.stderr
    with reader(tmp_path) as storage:
        (run,) = storage.list_runs(PROJECT)
    assert run["status"] == "finished"
    assert series(tmp_path, run["run_id"]) == (list(range(5)), [0.0, 1.0, 2.0, 3.0, 4.0])


# -- storage helpers ----------------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train(steps: range, slowest: list[float], pause: float = 0.001) -> None:
    """Log two metrics a step; the slowest log+step seen goes into `slowest`."""
    for step in steps:
        started = time.perf_counter()
        tracer.log({"loss": 1.0 / (step + 1), "acc": step / 1000})
        tracer.step()
        slowest[0] = max(slowest[0], time.perf_counter() - started)
        time.sleep(pause)


def _init(store: Path, **options: Any) -> TrainingTracer:
    settings: dict[str, Any] = {
        "storage_path": str(store),
        "flush_interval": 0.02,
        "track_system_metrics": False,
        **options,
    }
    return tracer.init(PROJECT, **settings)


STEP_LIMIT_S = 0.25  # a step never waits on storage (generous: shared machines)


# -- fault injection ------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["begin", "write", "checkpoint", "commit"])
@pytest.mark.parametrize("recovers", [True, False], ids=["recovers", "fails-to-the-end"])
def test_storage_failing_at_a_point_never_reaches_training_and_the_report_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, recovers: bool
) -> None:
    """Real SQLite failing at `point` from its 3rd occurrence on (after the run's row is
    written), for good or until step 200: no step raises or waits, and `write_report` is
    exact: what the file holds is what it says was written, and written + never written is
    everything logged (2 metrics and the timestamp, 300 steps)."""
    store = tmp_path / "store"
    plan = inject(monkeypatch, FaultPlan(point, first=3, armed=False))
    run = _init(store, checkpoint_interval=25)
    plan.armed = True
    slowest = [0.0]
    _train(range(200), slowest)
    if recovers:
        stop(plan)
    _train(range(200, 300), slowest)
    tracer.finish()
    report = run.write_report
    assert plan.injected > 0
    assert slowest[0] < STEP_LIMIT_S
    assert points_stored(store / "tracer.db", run.run_id) == report.points_written
    assert report.points_written + report.points_unwritten == 3 * 300
    assert report.points_dropped == report.steps_dropped == 0
    if recovers:
        assert report.points_unwritten == 0 and not report.lost
        with open_store(str(store)) as storage:
            stored = storage.get_run(run.run_id)
        assert stored is not None and stored["status"] == "finished"
    else:
        assert report.points_unwritten > 0 and report.failed_writes > 0
        assert "injected" in str(report.first_error)


def test_synchronous_writes_that_fail_never_raise_into_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """async_writes=False writes on the training thread: a failing write is still kept and
    retried, never raised."""
    store = tmp_path / "store"
    plan = inject(monkeypatch, FaultPlan("write", first=3, last=40, armed=False))
    run = _init(store, async_writes=False)
    plan.armed = True
    _train(range(100), [0.0], pause=0)
    tracer.finish()
    assert plan.injected == 38
    assert run.write_report.points_written == 3 * 100
    assert series(tmp_path, run.run_id)[0] == list(range(100))


def test_a_connection_that_cannot_open_is_a_clear_error_at_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject(monkeypatch, FaultPlan("open"))
    with pytest.raises(StorageError, match="cannot open"):
        _init(tmp_path / "store")
    assert tracer.get_run() is None


def test_a_close_that_fails_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    inject(monkeypatch, FaultPlan("close"))
    run = _init(store)
    _train(range(20), [0.0])
    tracer.finish()  # does not raise
    assert "could not close the storage" in caplog.text
    monkeypatch.undo()
    with open_store(str(store)) as storage:
        stored = storage.get_run(run.run_id)
    assert stored is not None and stored["status"] == "finished"


# -- another process holds the write lock ------------------------------------------------------
# argv: storage, ready file, release file. Holds SQLite's write lock until told to let go.
LOCK_HOLDER = """
    import os, sqlite3, sys, time

    conn = sqlite3.connect(os.path.join(sys.argv[1], "tracer.db"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    open(sys.argv[2], "w").close()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.01)
    conn.execute("COMMIT")
"""


def _hold_lock(tmp_path: Path, name: str = "holder") -> tuple[Any, Path]:
    """A real second process holding the write lock of `<tmp_path>/store/tracer.db`; returns
    it and the file that releases it."""
    ready, release = tmp_path / f"{name}.ready", tmp_path / f"{name}.release"
    holder = start_child(LOCK_HOLDER, tmp_path, str(ready), str(release), name=name)
    wait_until(ready.exists, holder, "the lock holder")
    return holder, release


def test_init_under_a_lock_held_by_another_process_fails_fast_and_clearly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _init(store).finish()  # the file exists, in WAL mode
    holder, release = _hold_lock(tmp_path)
    started = time.monotonic()
    with pytest.raises(StorageError, match="locked by another process"):
        _init(store)
    assert time.monotonic() - started < LOCK_WAIT_S + 5
    release.touch()
    assert holder.wait().returncode == 0
    run = _init(store)  # the lock is gone: init works again
    tracer.finish()
    assert run.write_report.failed_writes == 0


def test_a_lock_taken_mid_run_never_stalls_training_and_nothing_is_lost(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = _init(store)
    slowest = [0.0]
    _train(range(50), slowest)
    assert run.flush()
    holder, release = _hold_lock(tmp_path)
    _train(range(50, 450), slowest, pause=0.02)  # 8 s under the lock: writes fail and wait
    release.touch()
    assert holder.wait().returncode == 0
    _train(range(450, 500), slowest)
    tracer.finish()
    assert slowest[0] < STEP_LIMIT_S
    report = run.write_report
    assert report.failed_writes > 0 and not report.lost
    assert series(tmp_path, run.run_id)[0] == list(range(500))


def test_finish_under_a_lock_keeps_its_bound_and_reports_what_was_not_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    run = _init(store)
    _train(range(50), [0.0])
    assert run.flush()
    holder, release = _hold_lock(tmp_path)
    _train(range(50, 100), [0.0])
    started = time.monotonic()
    tracer.finish()
    took = time.monotonic() - started
    release.touch()
    assert holder.wait().returncode == 0
    assert took <= FINISH_TIMEOUT_S
    report = run.write_report
    assert report.points_unwritten > 0
    assert "never written (lost)" in caplog.text
    assert points_stored(store / "tracer.db", run.run_id) == report.points_written


# -- the store vanishes or is replaced ---------------------------------------------------------
def test_a_store_removed_mid_run_is_rebuilt_with_nothing_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rm -rf` of the storage path while a run writes: the writer notices, rebuilds the file
    from the one it still holds open, warns once, and the run is whole at the end."""
    store = tmp_path / "store"
    run = _init(store)
    _train(range(100), [0.0])
    assert run.flush()
    shutil.rmtree(store)
    _train(range(100, 200), [0.0])
    assert run.flush()
    shutil.rmtree(store)  # twice: still rebuilt, still warned once
    _train(range(200, 300), [0.0])
    tracer.finish()
    assert caplog.text.count("was removed while in use") == 1
    assert not run.write_report.lost
    with open_store(str(store)) as storage:
        stored = storage.get_run(run.run_id)
    assert stored is not None and stored["status"] == "finished"
    assert series(tmp_path, run.run_id)[0] == list(range(300))


def test_a_store_replaced_mid_run_is_never_written_and_the_loss_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    run = _init(store)
    _train(range(100), [0.0])
    assert run.flush()
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
        conn.commit()
    before = _digest(foreign)
    os.replace(foreign, store / "tracer.db")
    _train(range(100, 200), [0.0])
    tracer.finish()
    assert _digest(store / "tracer.db") == before
    report = run.write_report
    assert report.points_unwritten > 0 and report.lost
    assert "was replaced by another file" in caplog.text


# -- foreign files ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["look-alike", "other-application"])
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    store = tmp_path / "store"
    store.mkdir()
    db = store / "tracer.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE runs (x TEXT, project TEXT)")
        if kind == "look-alike":  # Tracer's schema version and a table called runs
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            conn.execute("PRAGMA application_id = 1234")
        conn.commit()
    before = _digest(db)
    match = "did not create" if kind == "look-alike" else "another application"
    with pytest.raises(StorageError, match=match):
        _init(store)
    assert _digest(db) == before
    assert sorted(p.name for p in store.iterdir()) == ["tracer.db"]  # no -wal, no -shm


def test_a_tracer_file_from_before_the_application_id_is_recognised_and_stamped(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    first = _init(store)
    _train(range(5), [0.0])
    tracer.finish()
    with closing(sqlite3.connect(store / "tracer.db")) as conn:
        conn.execute("PRAGMA application_id = 0")  # as every file was before
    _init(store)
    tracer.finish()
    with closing(sqlite3.connect(store / "tracer.db")) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert series(tmp_path, first.run_id)[0] == list(range(5))


# -- a read-only store --------------------------------------------------------------------------
# argv: storage. Reads the store like a user would, then tries to start a run there.
READ_ONLY_READER = """
    import json, sys
    import tracer
    from tracer.analysis import QueryEngine
    from tracer.exceptions import StorageError

    with QueryEngine(sys.argv[1]) as query:
        (run,) = query.list_runs()
        history = query.get_metric_history(run["run_id"], "loss")
    try:
        tracer.init("p", storage_path=sys.argv[1])
        error = None
    except StorageError as failure:
        error = str(failure)
    print(json.dumps({"status": run["status"], "steps": len(history["steps"]), "error": error}))
"""


def _read_only_command(store: Path) -> Optional[list[str]]:
    """How to run a child that sees `store` read-only: a read-only bind mount in a user and
    mount namespace (works as root or not, where unprivileged namespaces are allowed), else
    file permissions (not for root, who ignores them). None when neither is possible."""
    unshare = shutil.which("unshare")
    if unshare and sys.platform.startswith("linux"):
        probe = subprocess.run(
            [
                unshare,
                "-rm",
                "sh",
                "-c",
                f"mount --bind {store} {store} && mount -o remount,ro,bind {store} {store}",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            mount = (
                f"mount --bind '{store}' '{store}' && mount -o remount,ro,bind '{store}' '{store}'"
            )
            return [unshare, "-rm", "sh", "-c", f'{mount} && exec "$0" "$@"', sys.executable]
    if os.geteuid() != 0:
        for path in store.iterdir():
            path.chmod(0o444)
        store.chmod(0o555)
        return [sys.executable]
    return None


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX mounts or permissions")
def test_a_read_only_store_can_be_read_and_refuses_a_run_clearly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _init(store)
    _train(range(30), [0.0])
    tracer.finish()
    command = _read_only_command(store)
    if command is None:
        pytest.skip("root without user namespaces: no way to make the store read-only here")
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(READ_ONLY_READER))
    try:
        done = subprocess.run(
            [*command, str(script), str(store)],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
    finally:
        store.chmod(0o755)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert (seen["status"], seen["steps"]) == ("finished", 30)
    assert "read-only" in seen["error"]
