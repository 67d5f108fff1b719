"""The writer's backlog is bounded in bytes, and what the bound costs is counted exactly.

Real SQLite throughout: failures come from the fault-injection harness, a hung write from a
lock another connection holds on the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.core.faulty_sqlite import FaultPlan, inject
from tests.core.helpers import points_stored
from tracer.core import catching_up
from tracer.core import writer as writer_module
from tracer.core.columns import PACKED_POINT_BYTES
from tracer.core.tracer import TrainingTracer


def _init(store: Path, **options: Any) -> TrainingTracer:
    settings: dict[str, Any] = {
        "storage_path": str(store),
        "flush_interval": 0.02,
        "track_system_metrics": False,
        **options,
    }
    return tracer.init("backlog", **settings)


def test_the_max_backlog_mb_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="max_backlog_mb"):
        tracer.init("backlog", max_backlog_mb=0)


def test_a_failing_storage_keeps_the_newest_data_within_the_bound_and_counts_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage fails from early on until the end: the batches that wait are packed (16 bytes
    a point) and held within half of max_backlog_mb, older ones dropped and counted to the
    point; steps that close while the queue is past its own half are dropped and counted too
    (the writer cannot be waited for). Written + waiting + dropped is every point logged."""
    store = tmp_path / "store"
    plan = inject(monkeypatch, FaultPlan("begin", first=3, armed=False))
    bound_mb = 0.25
    run = _init(store, max_backlog_mb=bound_mb)
    plan.armed = True
    writer = run._writer
    assert isinstance(writer, writer_module.RunWriter)
    largest = 0
    for step in range(20_000):
        tracer.log({"loss": 1.0 / (step + 1), "acc": step * 1e-4})
        tracer.step()
        if step % 200 == 0:
            time.sleep(0.03)  # let the writer try (and fail) a few times
            largest = max(largest, writer._unwritten.bytes)
    tracer.finish()
    report = run.write_report
    assert plan.injected > 0 and report.failed_writes > 0
    assert report.points_dropped > 0  # 60,000 points do not fit in 0.125 MB
    stored = points_stored(store / "tracer.db", run.run_id)
    assert stored == report.points_written
    logged = 3 * 20_000  # loss, acc and the timestamp
    kept = report.points_written + report.points_unwritten + report.points_dropped
    assert kept + 3 * report.steps_dropped == logged
    # what waited: within its half of the bound, give or take the newest batch
    newest_batch = 400 * 3 * PACKED_POINT_BYTES * 4  # lists, before the failure packs it
    assert largest <= bound_mb * (1 << 20) / 2 + newest_batch
    assert report.points_unwritten * PACKED_POINT_BYTES <= bound_mb * (1 << 20) / 2 + newest_batch


def test_steps_queued_behind_a_hung_write_are_bounded_and_counted(tmp_path: Path) -> None:
    """Another connection holds the database's write lock: the writer's write waits on it
    (SQLite's busy timeout). The loop is not held up for long, the steps queued behind the
    hung write stay within their half of max_backlog_mb, the rest are dropped as they close
    and counted; once the lock goes, everything else is written."""
    store = tmp_path / "store"
    run = _init(store, max_backlog_mb=1.0)
    writer = run._writer
    assert isinstance(writer, writer_module.RunWriter)
    tracer.log({"loss": 1.0})
    tracer.step()
    run.flush()
    blocker = sqlite3.connect(store / "tracer.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else
    released = threading.Event()

    def release() -> None:
        time.sleep(2.5)
        blocker.execute("ROLLBACK")
        released.set()

    threading.Thread(target=release, daemon=True).start()
    logged = 1
    most_queued = 0
    per_step_bytes = catching_up.STEP_BYTES + 2 * catching_up.VALUE_BYTES
    deadline = time.monotonic() + 30  # the release thread never fails to end this
    while not released.is_set() and time.monotonic() < deadline:
        tracer.log({"loss": 1.0, "acc": 0.5})
        tracer.step()
        logged += 1
        if logged % 256 == 0:
            most_queued = max(most_queued, len(writer._queued_steps))
    tracer.finish()
    blocker.close()
    report = run.write_report
    assert report.steps_dropped > 0  # a flat-out loop outruns a 2.5 s lock
    assert most_queued * per_step_bytes <= (1 << 20) / 2 + 256 * per_step_bytes
    stored_steps = points_stored(store / "tracer.db", run.run_id)
    assert report.points_dropped == 0
    assert stored_steps == report.points_written
    # every step not dropped was written: loss, acc (but not at the first step) and time
    assert report.points_written == 3 * (logged - report.steps_dropped) - 1


def test_wide_steps_make_the_loop_wait_for_the_writers_queued_work(tmp_path: Path) -> None:
    """300 metrics a step cost the writer more than the loop, so the loop waits: here for
    the drain bound (the queued points would take the writer more than MAX_DRAIN_S), as the
    lag bound (a fifth of flush_interval: 0.2 s of logging) needs more than these 6,000
    steps on an idle machine. How short that keeps finish() is bench_run_length's figure."""
    run = _init(tmp_path / "store", flush_interval=1.0)
    names = [f"metric_{i}" for i in range(300)]
    for step in range(6_000):
        tracer.log({name: step * 0.001 + i for i, name in enumerate(names)})
        tracer.step()
    waited = run.write_report
    tracer.finish()
    assert not run.write_report.lost
    assert waited.catch_up_waits > 0 and waited.catch_up_seconds > 0
    assert waited.points_written > 0  # the writer worked while the loop ran
