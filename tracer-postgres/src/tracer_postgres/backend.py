"""`PostgresStorage`: Tracer's storage interface on PostgreSQL, for `postgresql://` locations.

Many processes on many hosts write one database at once: each run is written by its own
process (rank 0 of its job), rows are keyed by run, and every write is one short transaction
(row locks only). JSON-shaped fields (config, tags, checkpoints, events, samples) are stored
as text written by Python's `json` with NaN/Infinity allowed, which `jsonb` would refuse.
A run's liveness is its heartbeat (`tracer.storage.liveness`): a pid means nothing on another
host, so a run whose heartbeat stops reads "crashed" wherever it is read.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import psycopg
import psycopg.errors

from tracer import TracerConfig
from tracer.exceptions import DuplicateRunError, StorageError
from tracer.storage import (
    CheckpointRecord,
    EventRecord,
    RunRecord,
    SampleRecord,
    StorageBackend,
)
from tracer.storage.base import AnomalyWrite, CheckpointWrite, EventWrite, PointBatch, SampleWrite
from tracer.storage.liveness import effective_status
from tracer_postgres import location as locations
from tracer_postgres.metrics import MetricTables
from tracer_postgres.removal import delete_points, rewind

logger = logging.getLogger(__name__)

_RUN_COLUMNS = (
    "id, project, name, status, tags, notes, config, start_time, end_time, heartbeat,"
    " heartbeat_interval, host, pid, rank, world_size, total_steps, error, settings"
)
_UPDATABLE_RUN_FIELDS = frozenset(
    ("status", "end_time", "heartbeat", "total_steps", "error", "pid", "host", "notes", "rank",
     "world_size")
)  # fmt: skip
_SEVERITY_RANK = "(CASE {} WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)"
_NAN = float("nan")


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=True, default=str)


def _float(value: Optional[float]) -> float:
    return _NAN if value is None else float(value)


class PostgresStorage(MetricTables, StorageBackend):
    """PostgreSQL storage at one `postgresql://` location; thread-safe (a connection pool)."""

    def __init__(self, config: Union[TracerConfig, str], *, read_only: bool = False) -> None:
        """`config`: a run's config, or only the location URL; `read_only`: check and read,
        never create or migrate anything (the dashboard's way)."""
        url = config if isinstance(config, str) else config.storage_path
        try:
            where = locations.parse(url)
        except ValueError as error:
            raise StorageError(str(error)) from None
        self._series_ids: dict[tuple[str, str], int] = {}
        self._in_doubt: Optional[tuple[str, int, str]] = None  # (run, batch id, token)
        super().__init__(where, read_only=read_only)

    @classmethod
    def from_location(cls, location: str) -> StorageBackend:
        if cls.__init__ is not PostgresStorage.__init__:  # a subclass's own __init__
            return super().from_location(location)
        return cls(location)

    @classmethod
    def open_reader(cls, location: str) -> StorageBackend:
        if cls.__init__ is not PostgresStorage.__init__:
            return super().open_reader(location)
        return cls(location, read_only=True)

    def _rolled_back(self, error: BaseException) -> None:
        self._series_ids.clear()  # series created in the rolled-back transaction are gone

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
            run_id, project_name, run_name, _json(list(tags)), notes, _json(dict(config)),
            start_time, start_time, heartbeat_interval, host, pid, rank, world_size,
            _json(dict(settings or {})),
        )  # fmt: skip
        try:
            with self._transaction() as connection:
                connection.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (%s, %s, %s, 'running', %s, %s,"
                    " %s, %s, NULL, %s, %s, %s, %s, %s, %s, 0, NULL, %s)",
                    row,
                )
        except StorageError as error:
            if isinstance(error.__cause__, psycopg.errors.UniqueViolation):
                raise DuplicateRunError(
                    f"a run with id {run_id!r} or name {run_name!r} in project"
                    f" {project_name!r} already exists"
                ) from None
            raise

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._transaction() as connection:
            self._update_run(connection, run_id, fields)

    @staticmethod
    def _update_run(
        connection: psycopg.Connection[Any], run_id: str, fields: Mapping[str, Any]
    ) -> None:
        unknown = set(fields) - _UPDATABLE_RUN_FIELDS
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        if fields:
            assignments = ", ".join(f"{name} = %s" for name in fields)
            connection.execute(
                f"UPDATE runs SET {assignments} WHERE id = %s", (*fields.values(), run_id)
            )

    def get_run(self, run_id: str) -> Optional[RunRecord]:
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        return _run_record(rows[0]) if rows else None

    def list_runs(
        self,
        project_name: Optional[str] = None,
        *,
        status: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> list[RunRecord]:
        query = f"SELECT {_RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if project_name is not None:
            query += " WHERE project = %s"
            params.append(project_name)
        runs = [_run_record(row) for row in self._read(query + " ORDER BY start_time DESC,"
                                                        " created DESC", params)]  # fmt: skip
        if status is not None:
            runs = [run for run in runs if run["status"] == status]
        if tag is not None:
            runs = [run for run in runs if tag in run["tags"]]
        return runs

    def delete_run(self, run_id: str) -> None:
        """The points go first, in batches of their own short transactions (row locks only,
        so writers of other runs never wait long), then the run and its small rows."""
        series = self._read("SELECT id FROM series WHERE run_id = %s", (run_id,))
        for (series_id,) in series:
            delete_points(self._transaction, series_id)
        with self._transaction() as connection:
            connection.execute(
                "DELETE FROM metric_chunks WHERE series_id IN"
                " (SELECT id FROM series WHERE run_id = %s)",
                (run_id,),
            )  # chunks a late writer added meanwhile
            connection.execute("DELETE FROM runs WHERE id = %s", (run_id,))
        self._series_ids = {k: v for k, v in self._series_ids.items() if k[0] != run_id}

    def rewind_run(self, run_id: str, after_step: int) -> None:
        with self._transaction() as connection:
            rewind(connection, run_id, after_step)

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
        with self._transaction() as connection:
            self._write_checkpoints(connection, run_id, [checkpoint])

    @staticmethod
    def _write_checkpoints(
        connection: psycopg.Connection[Any], run_id: str, checkpoints: Sequence[CheckpointWrite]
    ) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO checkpoints (run_id, step, timestamp, reason, metrics,"
                " gradient_stats, system_metrics, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        run_id, int(c["step"]), float(c["timestamp"]), c["reason"],
                        _json(c["metrics"]), _json(c["gradient_stats"]),
                        _json(c["system_metrics"]), _json(c.get("extra") or {}),
                    )
                    for c in checkpoints
                ],
            )  # fmt: skip

    def get_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        rows = self._read(
            "SELECT step, timestamp, reason, metrics, gradient_stats, system_metrics, extra"
            " FROM checkpoints WHERE run_id = %s ORDER BY step, id",
            (run_id,),
        )
        return [
            {
                "run_id": run_id,
                "step": int(step),
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
        with self._transaction() as connection:
            self._write_events(connection, run_id, events)

    @staticmethod
    def _write_events(
        connection: psycopg.Connection[Any], run_id: str, events: Sequence[EventWrite]
    ) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO events (run_id, step, kind, data) VALUES (%s, %s, %s, %s)",
                [(run_id, int(e["step"]), e["kind"], _json(e["data"])) for e in events],
            )

    def get_events(self, run_id: str, kind: Optional[str] = None) -> list[EventRecord]:
        query = "SELECT step, kind, data FROM events WHERE run_id = %s"
        params: list[Any] = [run_id]
        if kind is not None:
            query += " AND kind = %s"
            params.append(kind)
        return [
            {"run_id": run_id, "step": int(step), "kind": kind_, "data": json.loads(data)}
            for step, kind_, data in self._read(query + " ORDER BY step, id", params)
        ]

    def write_samples(self, run_id: str, samples: Sequence[SampleWrite]) -> None:
        with self._transaction() as connection:
            self._write_samples(connection, run_id, samples)

    @staticmethod
    def _write_samples(
        connection: psycopg.Connection[Any], run_id: str, samples: Sequence[SampleWrite]
    ) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO samples (run_id, step, reason, role, name, shape, dtype, vals,"
                " truncated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        run_id, int(s["step"]), s["reason"], s["role"], s["name"],
                        _json(s["shape"]), s["dtype"], _json(s["values"]), bool(s["truncated"]),
                    )
                    for s in samples
                ],
            )  # fmt: skip

    def get_samples(self, run_id: str, step: Optional[int] = None) -> list[SampleRecord]:
        query = (
            "SELECT step, reason, role, name, shape, dtype, vals, truncated FROM samples"
            " WHERE run_id = %s"
        )
        params: list[Any] = [run_id]
        if step is not None:
            query += " AND step = %s"
            params.append(step)
        return [
            {
                "run_id": run_id,
                "step": int(step_),
                "reason": reason,
                "role": role,
                "name": name,
                "shape": json.loads(shape),
                "dtype": dtype,
                "values": json.loads(values),
                "truncated": bool(truncated),
            }
            for step_, reason, role, name, shape, dtype, values, truncated in self._read(
                query + " ORDER BY step, id", params
            )
        ]

    # -- anomalies --------------------------------------------------------------------------
    def write_anomalies(self, anomalies: Sequence[AnomalyWrite]) -> int:
        if not anomalies:
            return 0
        with self._transaction() as connection:
            return self._write_anomalies(connection, anomalies)

    @staticmethod
    def _write_anomalies(
        connection: psycopg.Connection[Any], anomalies: Sequence[AnomalyWrite]
    ) -> int:
        """One statement per episode: a new key is inserted, a stored one has its progress
        updated (a risen severity brings its own message and hint)."""
        rises = (
            _SEVERITY_RANK.format("EXCLUDED.severity")
            + " > "
            + _SEVERITY_RANK.format("anomalies.severity")
        )
        new = 0
        with connection.cursor() as cursor:
            for a in anomalies:
                cursor.execute(
                    "INSERT INTO anomalies (run_id, step, anomaly_type, severity, subject, value,"
                    " baseline, threshold, message, detector, end_step, count, open, hint)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (run_id, anomaly_type, step, subject) DO UPDATE SET"
                    " end_step = GREATEST(anomalies.end_step, EXCLUDED.end_step),"
                    " count = GREATEST(anomalies.count, EXCLUDED.count), open = EXCLUDED.open,"
                    f" severity = CASE WHEN {rises} THEN EXCLUDED.severity"
                    "   ELSE anomalies.severity END,"
                    f" message = CASE WHEN {rises} THEN EXCLUDED.message"
                    "   ELSE anomalies.message END,"
                    f" hint = CASE WHEN {rises} THEN EXCLUDED.hint ELSE anomalies.hint END"
                    " RETURNING xmax = 0",
                    (
                        a["run_id"], int(a["step"]), a["anomaly_type"], a["severity"],
                        a.get("subject") or "", a.get("value"), a.get("baseline"),
                        a.get("threshold"), a.get("message", ""), a.get("detector", ""),
                        int(a.get("end_step", a["step"])), int(a.get("count", 1)),
                        bool(a.get("open", False)), a.get("hint", ""),
                    ),
                )  # fmt: skip
                row = cursor.fetchone()
                new += bool(row and row[0])
        return new

    def get_anomalies(
        self, run_id: str, anomaly_types: Optional[Sequence[str]] = None
    ) -> list[AnomalyWrite]:
        query = (
            "SELECT step, anomaly_type, severity, subject, value, baseline, threshold, message,"
            " detector, end_step, count, open, hint FROM anomalies WHERE run_id = %s"
        )
        params: list[Any] = [run_id]
        if anomaly_types is not None:
            query += " AND anomaly_type = ANY(%s)"
            params.append(list(anomaly_types))
        return [
            {
                "run_id": run_id,
                "step": int(row[0]),
                "anomaly_type": row[1],
                "severity": row[2],
                "subject": row[3],
                "value": _float(row[4]),
                "baseline": _float(row[5]),
                "threshold": _float(row[6]),
                "message": row[7],
                "detector": row[8],
                "end_step": int(row[9]),
                "count": int(row[10]),
                "open": bool(row[11]),
                "hint": row[12],
            }
            for row in self._read(query + " ORDER BY step, id", params)
        ]

    def anomaly_counts(self, project_name: Optional[str] = None) -> dict[str, dict[str, int]]:
        query = "SELECT a.run_id, a.severity, count(*) FROM anomalies a"
        params: list[Any] = []
        if project_name is not None:
            query += " JOIN runs r ON r.id = a.run_id WHERE r.project = %s"
            params.append(project_name)
        counts: dict[str, dict[str, int]] = {}
        for run_id, severity, number in self._read(query + " GROUP BY 1, 2", params):
            counts.setdefault(run_id, {})[severity] = int(number)
        return counts

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
        """One writer flush in one transaction: all of it lands, or none of it.

        Each flush leaves a token in `flushes`. When a COMMIT's answer is lost (the server
        went away while committing), the writer retries the same batch; if its token is
        stored, the first attempt landed, and the batch is not written twice."""
        if self._in_doubt is not None and self._in_doubt[:2] == (run_id, id(points)):
            token = self._in_doubt[2]
            stored = self._read("SELECT token FROM flushes WHERE run_id = %s", (run_id,))
            self._in_doubt = None
            if stored and stored[0][0] == token:
                logger.info("A flush whose commit was in doubt had landed; not written again.")
                return
        token = uuid.uuid4().hex
        try:
            with self._transaction() as connection:
                if anomalies:
                    self._write_anomalies(connection, anomalies)
                if points:
                    self._write_metrics(connection, run_id, points)
                if checkpoints:
                    self._write_checkpoints(connection, run_id, checkpoints)
                if events:
                    self._write_events(connection, run_id, events)
                if samples:
                    self._write_samples(connection, run_id, samples)
                if run_fields:
                    self._update_run(connection, run_id, run_fields)
                connection.execute(
                    "INSERT INTO flushes (run_id, token) SELECT id, %s FROM runs WHERE id = %s"
                    " ON CONFLICT (run_id) DO UPDATE SET token = EXCLUDED.token",
                    (token, run_id),
                )
        except StorageError as error:
            if isinstance(error.__cause__, psycopg.OperationalError):
                self._in_doubt = (run_id, id(points), token)  # it may have committed
            raise


def _run_record(row: Sequence[Any]) -> RunRecord:
    (
        run_id, project, name, status, tags, notes, config, start_time, end_time, heartbeat,
        heartbeat_interval, host, pid, rank, world_size, total_steps, error, settings,
    ) = row  # fmt: skip
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
        "total_steps": int(total_steps),
        "error": error,
        "settings": json.loads(settings),
    }
