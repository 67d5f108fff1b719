"""What a run records besides metrics, in PostgreSQL: checkpoints, events, batch samples and
anomaly episodes, written inside the caller's transaction (one flush, `write_batch`) or alone.

JSON-shaped fields are stored as text written by Python's `json` with NaN/Infinity allowed,
which `jsonb` would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import psycopg

from tracer.storage import CheckpointRecord, EventRecord, SampleRecord
from tracer.storage.base import (
    AnomalyWrite,
    CheckpointWrite,
    EventWrite,
    SampleWrite,
    anomaly_record,
    checkpoint_write,
)
from tracer_postgres.connection import PostgresConnection
from tracer_postgres.runs import as_json

_SEVERITY_RANK = "(CASE {} WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)"


class StepRecordTables(PostgresConnection):
    """Checkpoints, events, samples and anomalies of the storage interface."""

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
                        as_json(c["metrics"]), as_json(c["gradient_stats"]),
                        as_json(c["system_metrics"]), as_json(c.get("extra") or {}),
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
                [(run_id, int(e["step"]), e["kind"], as_json(e["data"])) for e in events],
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
                        as_json(s["shape"]), s["dtype"], as_json(s["values"]), bool(s["truncated"]),
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
        rows = self._read(query + " ORDER BY step, id", params)
        return [anomaly_record(run_id, row) for row in rows]

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
