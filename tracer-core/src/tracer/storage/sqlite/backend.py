"""The default backend: one SQLite file, `<storage_path>/tracer.db`, shared by every process.

The connection, schema and transactions are `connection.py`'s; this module maps the storage
interface onto tables. All SQL is parameterized; names are data, never paths.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from tracer.exceptions import DuplicateRunError
from tracer.records import (
    AnomalyWrite,
    CheckpointRecord,
    CheckpointWrite,
    EventRecord,
    EventWrite,
    PointBatch,
    RunRecord,
    SampleRecord,
    SampleWrite,
    checkpoint_write,
)
from tracer.storage.base import StorageBackend
from tracer.storage.liveness import effective_status
from tracer.storage.sqlite import rewind
from tracer.storage.sqlite.anomaly_table import AnomalyTable
from tracer.storage.sqlite.bulk_reads import BulkReads
from tracer.storage.sqlite.metrics import MetricTables

if TYPE_CHECKING:
    from tracer.config import TracerConfig

logger = logging.getLogger(__name__)

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


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=True, default=str)


class SQLiteStorage(BulkReads, MetricTables, AnomalyTable, StorageBackend):
    """SQLite storage for one `storage_path`; thread-safe, one connection per instance."""

    def __init__(self, config: Union[TracerConfig, str], *, read_only: bool = False) -> None:
        """`config`: a run's config, or only the location (a path or `sqlite://` URL);
        `read_only`: open the file read-only (it must exist; nothing is created or migrated)."""
        self._series_ids: dict[tuple[str, str], int] = {}  # (run, metric) -> series row id
        location = config if isinstance(config, str) else config.storage_path
        super().__init__(location, read_only=read_only)

    @classmethod
    def from_location(cls, location: str) -> StorageBackend:
        if cls.__init__ is not SQLiteStorage.__init__:  # a subclass's own __init__ wants a config
            return super().from_location(location)
        return cls(location)

    @classmethod
    def open_reader(cls, location: str) -> StorageBackend:
        if cls.__init__ is not SQLiteStorage.__init__:
            return super().open_reader(location)
        return cls(location, read_only=True)

    def local_directory(self) -> Optional[str]:
        """The directory of `tracer.db`: the storage_path itself."""
        return os.path.dirname(os.path.abspath(self.path))

    def _rolled_back(self) -> None:
        self._series_ids.clear()  # ids created in the rolled-back transaction are gone

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

    def rewind_run(self, run_id: str, after_step: int) -> None:
        with self._transaction() as conn:
            rewind.rewind(conn, run_id, after_step)

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
        checkpoint = checkpoint_write(
            step, timestamp, metrics, gradient_stats, system_metrics, reason=reason, extra=extra
        )
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
