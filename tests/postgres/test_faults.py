"""Failure behaviour on PostgreSQL, as SQLite's contract (README, "Reliability"): a server
restarted mid-run loses nothing, one that stops is reported at finish, and a server that
answers slowly (a write blocked on a lock) never holds up the training loop."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

import tracer
from tests.postgres.helpers import running_test_server, schema_url, server_url
from tracer.storage import open_storage

pytestmark = pytest.mark.slow


def _steps(first: int, last: int) -> None:
    for step in range(first, last):
        tracer.log({"loss": 1.0 / (1 + step), "acc": step / 1000})
        tracer.step()


def _stored_steps(url: str, run_id: str) -> list[int]:
    reader = open_storage(url)
    try:
        return reader.get_metric_timeseries(run_id, "loss")["steps"]
    finally:
        reader.close()


def test_a_server_restarted_mid_run_loses_nothing() -> None:
    url = schema_url("restart")
    run = tracer.init(
        project="p", storage_path=url, flush_interval=0.05, track_system_metrics=False
    )
    _steps(0, 300)
    assert run.flush()
    running_test_server().restart()  # every pooled connection dies
    _steps(300, 600)
    run.finish()
    report = run.write_report
    assert not report.lost, report
    assert _stored_steps(url, run.run_id) == list(range(600))


def test_a_server_gone_at_finish_is_reported_as_loss_not_raised() -> None:
    url = schema_url("gone")
    run = tracer.init(
        project="p", storage_path=url, flush_interval=0.05, track_system_metrics=False
    )
    _steps(0, 100)
    assert run.flush()
    server = running_test_server()
    server.halt()
    try:
        _steps(100, 200)
        run.finish()  # never raises: the writer reports what it could not write
    finally:
        server.resume()
    report = run.write_report
    assert report.lost and report.failed_writes >= 1
    assert report.points_unwritten == report.points_written  # the 100 steps after the stop
    assert report.first_error is not None and "PostgreSQL" in report.first_error
    assert _stored_steps(url, run.run_id) == list(range(100))


def _a_write_waits(session: psycopg.Connection[Any]) -> bool:
    waiting = session.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.pid <> pg_backend_pid()"
    ).fetchone()
    return waiting is not None and waiting[0] >= 1


def test_a_blocked_write_never_holds_up_training() -> None:
    """Another session holds the run's row locked: the writer's transaction waits on it, and
    the loop still runs all its steps meanwhile; once the lock goes, everything lands."""
    url = schema_url("slow")
    run = tracer.init(
        project="p", storage_path=url, flush_interval=0.05, track_system_metrics=False
    )
    _steps(0, 50)
    assert run.flush()
    schema = url.rsplit("=", 1)[1]
    blocker = psycopg.connect(server_url())
    try:
        blocker.execute(f"SELECT 1 FROM {schema}.runs WHERE id = %s FOR UPDATE", (run.run_id,))
        _steps(50, 100)
        deadline = time.monotonic() + 60  # until the writer's next flush is stuck on the lock
        while time.monotonic() < deadline and not _a_write_waits(blocker):
            time.sleep(0.05)
        assert _a_write_waits(blocker)
        _steps(100, 5000)  # the loop runs on while the writer is stuck
        assert _a_write_waits(blocker)
        assert _stored_steps(url, run.run_id) == list(range(50))
    finally:
        blocker.rollback()
        blocker.close()
    run.finish()
    assert not run.write_report.lost
    assert _stored_steps(url, run.run_id) == list(range(5000))
