"""The default backend: one SQLite file, `<storage_path>/tracer.db`, shared by every process.

WAL lets readers (queries, the CLI) read while runs write; every write is a short
`BEGIN IMMEDIATE` transaction with a long busy timeout, so DDP ranks and parallel sweeps share
one file without "database is locked". All SQL is parameterized; names are data, never paths.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any, Optional

from tracer.exceptions import DuplicateRunError, StorageError
from tracer.storage.base import (
    AnomalyWrite,
    CheckpointRecord,
    CheckpointWrite,
    EventRecord,
    EventWrite,
    MetricSeries,
    MetricSummary,
    PointBatch,
    RunRecord,
    SampleRecord,
    SampleWrite,
    StorageBackend,
)
from tracer.storage.liveness import effective_status
from tracer.storage.sqlite import codec, schema

if TYPE_CHECKING:
    from tracer.config import TracerConfig

logger = logging.getLogger(__name__)

DB_FILENAME = "tracer.db"
BUSY_TIMEOUT_MS = 60_000
_LOCKED_RETRIES = 20

_RUN_COLUMNS = (
    "id, project, name, status, tags, notes, config, start_time, end_time, heartbeat,"
    " heartbeat_interval, host, pid, rank, world_size, total_steps, error, settings"
)
_UPDATABLE_RUN_FIELDS = {
    "status": "status",
    "end_time": "end_time",
    "heartbeat": "heartbeat",
    "total_steps": "total_steps",
    "error": "error",
    "pid": "pid",
    "host": "host",
    "notes": "notes",
    "rank": "rank",
    "world_size": "world_size",
}


def database_path(storage_path: str) -> str:
    """The file a storage_path names: `<dir>/tracer.db`; `sqlite://` prefixes are dropped."""
    if storage_path.lower().startswith("sqlite://"):
        storage_path = storage_path[len("sqlite://") :]
    return os.path.join(os.path.expanduser(storage_path), DB_FILENAME)


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=True, default=str)


def _real(value: Any) -> Optional[float]:
    """NaN is stored as NULL in a REAL column; `_float` reads it back as NaN."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else number


def _float(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


class SQLiteStorage(StorageBackend):
    """SQLite storage for one `storage_path`; thread-safe, one connection per instance."""

    def __init__(self, config: TracerConfig) -> None:
        self.path = database_path(config.storage_path)
        directory = os.path.dirname(self.path)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise StorageError(
                f"storage_path {config.storage_path!r} is a file; Tracer needs a directory"
                f" there to keep {DB_FILENAME} in"
            )
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create storage_path {config.storage_path!r}: {error}"
            ) from error
        self._lock = threading.RLock()
        self._closed = False
        self._series_ids: dict[tuple[str, str], int] = {}
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from error
        try:
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._conn.close()
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise StorageError(f"{self.path} stayed locked: {error}") from error
            raise StorageError(
                f"{self.path} is not a readable Tracer database ({error}). Tracer leaves it"
                " untouched: move it aside or choose another storage_path."
            ) from error
        except BaseException:
            self._conn.close()
            raise

    # -- connection and schema ------------------------------------------------------------
    def _configure(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._refuse_foreign_or_newer_file()  # before anything writes to the file
        for attempt in range(_LOCKED_RETRIES):
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == _LOCKED_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if str(mode).lower() != "wal":
            logger.warning("SQLite at %s runs in %s mode, not WAL.", self.path, mode)
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _refuse_foreign_or_newer_file(self) -> None:
        # Reading the schema makes a file that is not SQLite fail here (DatabaseError).
        tables = {
            row[0]
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > schema.SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this tracer-core"
                f" understands ({schema.SCHEMA_VERSION}); upgrade tracer-core to read it"
            )
        if version == 0 and tables:
            raise StorageError(
                f"{self.path} is an SQLite database that Tracer did not create"
                f" (tables: {', '.join(sorted(tables))}); Tracer leaves it untouched"
            )

    def _migrate(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION:
            return
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process
            for number in range(version, schema.SCHEMA_VERSION):  # may have migrated it
                schema.MIGRATIONS[number](conn)
                logger.info("Migrated %s to schema version %d.", self.path, number + 1)
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; waits for other writers (busy timeout) instead of failing."""
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            for attempt in range(_LOCKED_RETRIES):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or attempt == _LOCKED_RETRIES - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            try:
                yield self._conn
            except BaseException:
                self._series_ids.clear()  # ids created in this transaction are gone
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- runs -------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        project_name: str,
        run_name: str,
        start_time: float,
        config: Mapping[str, Any],
        *,
        tags: Sequence[str] = (),
        notes: Optional[str] = None,
        host: Optional[str] = None,
        pid: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        heartbeat_interval: Optional[float] = None,
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        row = (
            run_id,
            project_name,
            run_name,
            _json(list(tags)),
            notes,
            _json(dict(config)),
            start_time,
            start_time,
            heartbeat_interval,
            host,
            pid,
            rank,
            world_size,
            _json(dict(settings or {})),
        )
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES"
                    " (?, ?, ?, 'running', ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, 0, NULL, ?)",
                    row,
                )
        except sqlite3.IntegrityError as error:
            raise DuplicateRunError(
                f"a run with id {run_id!r} or name {run_name!r} in project {project_name!r}"
                " already exists"
            ) from error

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._transaction() as conn:
            self._update_run(conn, run_id, fields)

    @staticmethod
    def _update_run(conn: sqlite3.Connection, run_id: str, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - set(_UPDATABLE_RUN_FIELDS)
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{_UPDATABLE_RUN_FIELDS[name]} = ?" for name in fields)
        conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*fields.values(), run_id))

    def get_run(self, run_id: str) -> Optional[RunRecord]:
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run_record(rows[0]) if rows else None

    def list_runs(
        self,
        project_name: Optional[str] = None,
        *,
        status: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> list[RunRecord]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if project_name is not None:
            sql += " WHERE project = ?"
            params.append(project_name)
        sql += " ORDER BY start_time DESC, rowid DESC"
        runs = [_run_record(row) for row in self._read(sql, params)]
        if status is not None:
            runs = [run for run in runs if run["status"] == status]
        if tag is not None:
            runs = [run for run in runs if tag in run["tags"]]
        return runs

    def delete_run(self, run_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            self._series_ids = {k: v for k, v in self._series_ids.items() if k[0] != run_id}

    # -- metrics ----------------------------------------------------------------------------
    def write_metrics(self, run_id: str, points: PointBatch) -> None:
        with self._transaction() as conn:
            self._write_metrics(conn, run_id, points)

    def _series_id(self, conn: sqlite3.Connection, run_id: str, name: str) -> int:
        key = (run_id, name)
        cached = self._series_ids.get(key)
        if cached is not None:
            return cached
        row = conn.execute("SELECT id FROM series WHERE run_id = ? AND name = ?", key).fetchone()
        if row is None:
            row = (conn.execute("INSERT INTO series (run_id, name) VALUES (?, ?)", key).lastrowid,)
        self._series_ids[key] = int(row[0])
        return int(row[0])

    def _write_metrics(self, conn: sqlite3.Connection, run_id: str, points: PointBatch) -> None:
        # One executemany per table: each statement releases and retakes the GIL, and on a
        # busy training thread retaking it can cost a whole switch interval.
        chunks = []
        summaries = []
        for name, (raw_steps, raw_values) in points.items():
            if not raw_steps:
                continue
            steps, values = codec.normalize(raw_steps, raw_values)
            series_id = self._series_id(conn, run_id, name)
            chunks.append((series_id, *codec.encode(steps, values)))
            count, last_step, last_value, low, high = schema.summarize(steps, values)
            summaries.append(
                (
                    count,
                    last_step,
                    last_value,
                    last_step,
                    last_step,
                    low,
                    low,
                    high,
                    high,
                    series_id,
                )
            )
        conn.executemany(
            "INSERT INTO metric_chunks (series_id, first_step, last_step, count, steps, vals)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            chunks,
        )
        conn.executemany(
            "UPDATE series SET count = count + ?,"
            " last_value = CASE WHEN last_step IS NULL OR last_step <= ?"
            "   THEN ? ELSE last_value END,"
            " last_step = max(coalesce(last_step, ?), ?),"
            " min_value = CASE WHEN min_value IS NULL THEN ?"
            "   ELSE min(min_value, coalesce(?, min_value)) END,"
            " max_value = CASE WHEN max_value IS NULL THEN ?"
            "   ELSE max(max_value, coalesce(?, max_value)) END"
            " WHERE id = ?",
            summaries,
        )

    def get_metric_timeseries(self, run_id: str, metric: str) -> MetricSeries:
        rows = self._read(
            "SELECT c.first_step, c.last_step, c.count, c.steps, c.vals FROM metric_chunks c"
            " JOIN series s ON s.id = c.series_id WHERE s.run_id = ? AND s.name = ?"
            " ORDER BY c.id",
            (run_id, metric),
        )
        steps: list[int] = []
        values: list[float] = []
        in_order = True
        for first, last, count, steps_blob, values_blob in rows:
            if steps and first <= steps[-1]:
                in_order = False
            steps.extend(codec.decode_steps(first, last, count, steps_blob))
            values.extend(codec.decode_values(values_blob))
        if not in_order:
            steps, values = codec.normalize(steps, values)
        return {"steps": steps, "values": values}

    def get_metric_arrays(self, run_id: str, metric: str) -> tuple[Sequence[int], Sequence[float]]:
        """Steps as one `range` when every chunk continues the last with the same stride (the
        usual case), else an int64 array; values as one float64 array. No per-point objects."""
        rows = self._read(
            "SELECT c.first_step, c.last_step, c.count, c.steps, c.vals FROM metric_chunks c"
            " JOIN series s ON s.id = c.series_id WHERE s.run_id = ? AND s.name = ?"
            " ORDER BY c.id",
            (run_id, metric),
        )
        values = array("d")
        pieces: list[Sequence[int]] = []
        for first, last, count, steps_blob, values_blob in rows:
            pieces.append(codec.decode_steps(first, last, count, steps_blob))
            values.extend(codec.decode_values(values_blob))
        joined_range = _join_ranges(pieces)
        if joined_range is not None:
            return joined_range, values
        joined = array("q")
        for piece in pieces:
            joined.extend(piece)
        if not all(map(operator.lt, joined, islice(joined, 1, None))):
            ordered, ordered_values = codec.normalize(list(joined), list(values))
            return ordered, array("d", ordered_values)
        return joined, values

    def list_metrics(self, run_id: str) -> list[MetricSummary]:
        rows = self._read(
            "SELECT name, count, last_step, last_value, min_value, max_value FROM series"
            " WHERE run_id = ? AND count > 0 ORDER BY name",
            (run_id,),
        )
        return [
            {
                "name": name,
                "count": count,
                "last_step": last_step,
                "last_value": codec.decode_values(last_value)[0],
                "min_value": float("nan") if low is None else low,
                "max_value": float("nan") if high is None else high,
            }
            for name, count, last_step, last_value, low, high in rows
        ]

    # -- checkpoints ------------------------------------------------------------------------
    def write_checkpoint(
        self,
        run_id: str,
        step: int,
        timestamp: float,
        metrics: Mapping[str, float],
        gradient_stats: Mapping[str, Mapping[str, float]],
        system_metrics: Mapping[str, float],
        *,
        reason: str = "interval",
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        checkpoint: CheckpointWrite = {
            "step": step,
            "timestamp": timestamp,
            "reason": reason,
            "metrics": dict(metrics),
            "gradient_stats": {k: dict(v) for k, v in gradient_stats.items()},
            "system_metrics": dict(system_metrics),
            "extra": dict(extra or {}),
        }
        with self._transaction() as conn:
            self._write_checkpoints(conn, run_id, [checkpoint])

    @staticmethod
    def _write_checkpoints(
        conn: sqlite3.Connection, run_id: str, checkpoints: Sequence[CheckpointWrite]
    ) -> None:
        conn.executemany(
            "INSERT INTO checkpoints (run_id, step, timestamp, reason, metrics, gradient_stats,"
            " system_metrics, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    int(c["step"]),
                    float(c["timestamp"]),
                    c["reason"],
                    _json(c["metrics"]),
                    _json(c["gradient_stats"]),
                    _json(c["system_metrics"]),
                    _json(c.get("extra") or {}),
                )
                for c in checkpoints
            ],
        )

    def get_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        rows = self._read(
            "SELECT step, timestamp, reason, metrics, gradient_stats, system_metrics, extra"
            " FROM checkpoints WHERE run_id = ? ORDER BY step, id",
            (run_id,),
        )
        return [
            {
                "run_id": run_id,
                "step": step,
                "timestamp": timestamp,
                "reason": reason,
                "metrics": json.loads(metrics),
                "gradient_stats": json.loads(gradient_stats),
                "system_metrics": json.loads(system_metrics),
                "extra": json.loads(extra),
            }
            for step, timestamp, reason, metrics, gradient_stats, system_metrics, extra in rows
        ]

    # -- events and samples -----------------------------------------------------------------
    def write_events(self, run_id: str, events: Sequence[EventWrite]) -> None:
        with self._transaction() as conn:
            self._write_events(conn, run_id, events)

    @staticmethod
    def _write_events(conn: sqlite3.Connection, run_id: str, events: Sequence[EventWrite]) -> None:
        conn.executemany(
            "INSERT INTO events (run_id, step, kind, data) VALUES (?, ?, ?, ?)",
            [(run_id, int(e["step"]), e["kind"], _json(e["data"])) for e in events],
        )

    def get_events(self, run_id: str, kind: Optional[str] = None) -> list[EventRecord]:
        sql = "SELECT step, kind, data FROM events WHERE run_id = ?"
        params: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._read(sql + " ORDER BY step, id", params)
        return [
            {"run_id": run_id, "step": step, "kind": kind_, "data": json.loads(data)}
            for step, kind_, data in rows
        ]

    def write_samples(self, run_id: str, samples: Sequence[SampleWrite]) -> None:
        with self._transaction() as conn:
            self._write_samples(conn, run_id, samples)

    @staticmethod
    def _write_samples(
        conn: sqlite3.Connection, run_id: str, samples: Sequence[SampleWrite]
    ) -> None:
        conn.executemany(
            "INSERT INTO samples (run_id, step, reason, role, name, shape, dtype, vals,"
            " truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    int(s["step"]),
                    s["reason"],
                    s["role"],
                    s["name"],
                    _json(s["shape"]),
                    s["dtype"],
                    _json(s["values"]),
                    int(bool(s["truncated"])),
                )
                for s in samples
            ],
        )

    def get_samples(self, run_id: str, step: Optional[int] = None) -> list[SampleRecord]:
        sql = (
            "SELECT step, reason, role, name, shape, dtype, vals, truncated FROM samples"
            " WHERE run_id = ?"
        )
        params: list[Any] = [run_id]
        if step is not None:
            sql += " AND step = ?"
            params.append(step)
        rows = self._read(sql + " ORDER BY step, id", params)
        return [
            {
                "run_id": run_id,
                "step": step_,
                "reason": reason,
                "role": role,
                "name": name,
                "shape": json.loads(shape),
                "dtype": dtype,
                "values": json.loads(values),
                "truncated": bool(truncated),
            }
            for step_, reason, role, name, shape, dtype, values, truncated in rows
        ]

    # -- anomalies --------------------------------------------------------------------------
    def write_anomalies(self, anomalies: Sequence[AnomalyWrite]) -> int:
        with self._transaction() as conn:
            return self._write_anomalies(conn, anomalies)

    @staticmethod
    def _write_anomalies(conn: sqlite3.Connection, anomalies: Sequence[AnomalyWrite]) -> int:
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO anomalies (run_id, step, anomaly_type, severity, subject,"
            " value, baseline, threshold, message, detector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a["run_id"],
                    int(a["step"]),
                    a["anomaly_type"],
                    a["severity"],
                    a.get("subject") or "",
                    _real(a.get("value")),
                    _real(a.get("baseline")),
                    _real(a.get("threshold")),
                    a.get("message", ""),
                    a.get("detector", ""),
                )
                for a in anomalies
            ],
        )
        return conn.total_changes - before

    def get_anomalies(
        self, run_id: str, anomaly_types: Optional[Sequence[str]] = None
    ) -> list[AnomalyWrite]:
        sql = (
            "SELECT step, anomaly_type, severity, subject, value, baseline, threshold, message,"
            " detector FROM anomalies WHERE run_id = ?"
        )
        params: list[Any] = [run_id]
        if anomaly_types is not None:
            types = list(anomaly_types)
            sql += f" AND anomaly_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        rows = self._read(sql + " ORDER BY step, id", params)
        return [
            {
                "run_id": run_id,
                "step": step,
                "anomaly_type": kind,
                "severity": severity,
                "subject": subject,
                "value": _float(value),
                "baseline": _float(baseline),
                "threshold": _float(threshold),
                "message": message,
                "detector": detector,
            }
            for step, kind, severity, subject, value, baseline, threshold, message, detector in rows
        ]

    # -- batching ---------------------------------------------------------------------------
    def write_batch(
        self,
        run_id: str,
        points: PointBatch,
        checkpoints: Sequence[CheckpointWrite] = (),
        run_fields: Optional[Mapping[str, Any]] = None,
        events: Sequence[EventWrite] = (),
        samples: Sequence[SampleWrite] = (),
        anomalies: Sequence[AnomalyWrite] = (),
    ) -> None:
        """One writer flush in one transaction: all of it lands, or none of it."""
        with self._transaction() as conn:
            if anomalies:
                self._write_anomalies(conn, anomalies)
            if points:
                self._write_metrics(conn, run_id, points)
            if checkpoints:
                self._write_checkpoints(conn, run_id, checkpoints)
            if events:
                self._write_events(conn, run_id, events)
            if samples:
                self._write_samples(conn, run_id, samples)
            if run_fields:
                self._update_run(conn, run_id, run_fields)


def _join_ranges(pieces: Sequence[Sequence[int]]) -> Optional[range]:
    """One range equal to the pieces laid end to end, if they are ranges that continue one
    another with one stride; else None."""
    if not pieces:
        return range(0)
    if not all(isinstance(piece, range) for piece in pieces):
        return None
    ranges = [piece for piece in pieces if isinstance(piece, range)]
    stride = next((r.step for r in ranges if len(r) > 1), 1)
    for before, after in pairwise(ranges):
        if (len(after) > 1 and after.step != stride) or after.start != before[-1] + stride:
            return None
    return range(ranges[0].start, ranges[-1][-1] + 1, stride)


def _run_record(row: Sequence[Any]) -> RunRecord:
    (
        run_id,
        project,
        name,
        status,
        tags,
        notes,
        config,
        start_time,
        end_time,
        heartbeat,
        heartbeat_interval,
        host,
        pid,
        rank,
        world_size,
        total_steps,
        error,
        settings,
    ) = row
    return {
        "run_id": run_id,
        "project_name": project,
        "run_name": name,
        "status": effective_status(
            status, host=host, pid=pid, heartbeat=heartbeat, heartbeat_interval=heartbeat_interval
        ),
        "tags": json.loads(tags),
        "notes": notes,
        "config": json.loads(config),
        "start_time": start_time,
        "end_time": end_time,
        "heartbeat": heartbeat,
        "heartbeat_interval": heartbeat_interval,
        "host": host,
        "pid": pid,
        "rank": rank,
        "world_size": world_size,
        "total_steps": total_steps,
        "error": error,
        "settings": json.loads(settings),
    }
