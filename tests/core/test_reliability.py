"""Hostile environments, proved against real processes and real files: a fork of a process
with an open run, another process holding the database's write lock, a store removed or
replaced while a run writes, a foreign SQLite file, a read-only store, and storage that fails
at chosen points (the fault-injection harness in `tests/core/faulty_sqlite.py`).

The crash and signal contracts (SIGKILL, SIGTERM, exceptions, concurrency) are in
`test_lifecycle_subprocess.py`; both use the child-process helpers of `processes.py`.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from tests.core.processes import (
    PROJECT,
    kill_leftover_children,  # noqa: F401  (an autouse fixture)
    reader,
    run_child,
    series,
)

pytestmark = pytest.mark.slow

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork and signals")

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
