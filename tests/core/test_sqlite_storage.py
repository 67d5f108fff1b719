"""SQLite specifics: file settings, schema versions and migration, files Tracer must not touch."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

import tracer
from tests.core.helpers import open_store
from tracer.config import TracerConfig
from tracer.exceptions import StorageError
from tracer.storage.retention import apply_retention
from tracer.storage.sqlite import SQLiteStorage, codec, schema
from tracer.storage.sqlite.connection import APPLICATION_ID, LOCK_WAIT_S


def _open(path: Path) -> SQLiteStorage:
    return SQLiteStorage(TracerConfig(project_name="p", storage_path=str(path)))


def test_file_settings(tmp_path: Path) -> None:
    store = _open(tmp_path)
    conn = sqlite3.connect(tmp_path / "tracer.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"metric_chunks_by_series", "checkpoints_by_run", "runs_by_project"} <= indexes
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # Another process's write transaction is waited for, but never for long (a stuck
    # process must not stall init or finish): see tests/core/test_reliability.py.
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == LOCK_WAIT_S * 1000
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    store.close()


def test_history_reads_use_the_series_index(tmp_path: Path) -> None:
    store = _open(tmp_path)
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT c.first_step FROM metric_chunks c JOIN series s"
        " ON s.id = c.series_id WHERE s.run_id = ? AND s.name = ? ORDER BY c.id",
        ("r", "m"),
    ).fetchall()
    text = " ".join(str(row) for row in plan)
    assert "metric_chunks_by_series" in text and "SCAN" not in text.replace("SCAN CONSTANT", "")
    store.close()


def test_an_older_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written at schema version 1 gains v2's per-metric summaries, data intact."""
    tmp_path.mkdir(exist_ok=True)
    conn = sqlite3.connect(tmp_path / "tracer.db", isolation_level=None)
    schema.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (id, project, name, status, start_time) VALUES ('r', 'p', 'n',"
        " 'finished', 1.0)"
    )
    conn.execute("INSERT INTO series (id, run_id, name) VALUES (1, 'r', 'loss')")
    for steps, values in (([0, 1, 2], [3.0, float("nan"), 1.0]), ([3, 4], [0.5, 0.25])):
        conn.execute(
            "INSERT INTO metric_chunks (series_id, first_step, last_step, count, steps, vals)"
            " VALUES (1, ?, ?, ?, ?, ?)",
            codec.encode(steps, values),
        )
    conn.close()

    store = _open(tmp_path)
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    (loss,) = store.list_metrics("r")
    assert (loss["count"], loss["last_step"], loss["last_value"]) == (5, 4, 0.25)
    assert (loss["min_value"], loss["max_value"]) == (0.25, 3.0)
    assert store.get_metric_timeseries("r", "loss")["steps"] == [0, 1, 2, 3, 4]
    store.close()


def test_a_file_from_a_newer_tracer_is_refused_untouched(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "tracer.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = (tmp_path / "tracer.db").read_bytes()
    with pytest.raises(StorageError, match="newer"):
        _open(tmp_path)
    assert (tmp_path / "tracer.db").read_bytes() == before


def test_someone_elses_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "tracer.db")
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="did not create"):
        _open(tmp_path)
    conn = sqlite3.connect(tmp_path / "tracer.db")
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == [("invoices",)]


def test_closed_storage_raises_a_clear_error(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.list_runs()


def _ended_run(
    store: SQLiteStorage, run_id: str, project: str, ended_days_ago: float, status: str = "finished"
) -> None:
    ended = time.time() - ended_days_ago * 86_400
    store.create_run(run_id, project, run_id, ended - 60, {})
    store.update_run(run_id, status=status, end_time=ended, heartbeat=ended)


def test_retention_deletes_old_ended_runs_of_the_project_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_store() as store:
        _ended_run(store, "old-finished", "p", 40)
        _ended_run(store, "old-failed", "p", 31, status="failed")
        _ended_run(store, "recent", "p", 5)
        _ended_run(store, "other-project", "q", 400)
        store.create_run(
            "old-but-running",
            "p",
            "old-but-running",
            time.time() - 90 * 86_400,
            {},
            host=None,
            pid=None,
        )
    with caplog.at_level(logging.WARNING):
        tracer.init(project="p", retention_days=30)
    tracer.finish()
    with open_store() as store:
        kept = {run["run_id"] for run in store.list_runs()}
    assert "old-finished" not in kept and "old-failed" not in kept
    assert {"recent", "other-project", "old-but-running"} <= kept
    assert "deleted run old-finished" in caplog.text and "deleted run old-failed" in caplog.text


def test_retention_zero_keeps_everything() -> None:
    with open_store() as store:
        _ended_run(store, "ancient", "p", 4000)
        assert apply_retention(store, "p", 0) == []
        assert store.get_run("ancient") is not None
