"""Anomalies in SQLite: one row per detection episode, keyed by (run, type, start step,
subject), so that an episode written again as it grows (online) or replayed (offline)
updates its row instead of adding one; a risen severity brings its message and hint.

A base of `SQLiteStorage`, on top of the connection, as `metrics.py` is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Optional

from tracer.records import AnomalyWrite, anomaly_record
from tracer.storage.sqlite.connection import SQLiteConnection

_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class AnomalyTable(SQLiteConnection):
    """The anomaly part of the storage interface over the `anomalies` table."""

    def write_anomalies(self, anomalies: Sequence[AnomalyWrite]) -> int:
        with self._transaction() as conn:
            return self._write_anomalies(conn, anomalies)

    @staticmethod
    def _write_anomalies(conn: sqlite3.Connection, anomalies: Sequence[AnomalyWrite]) -> int:
        rows = [
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
                int(a.get("end_step", a["step"])),
                int(a.get("count", 1)),
                int(bool(a.get("open", False))),
                a.get("hint", ""),
            )
            for a in anomalies
        ]
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO anomalies (run_id, step, anomaly_type, severity, subject,"
            " value, baseline, threshold, message, detector, end_step, count, open, hint)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        new = conn.total_changes - before
        if new < len(rows):  # episodes already stored: their progress
            # A risen severity brings its own message and hint (the old ones explain the
            # lower severity); every SET expression reads the row as it was.
            rises = "? > (CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)"
            conn.executemany(
                "UPDATE anomalies SET end_step = MAX(COALESCE(end_step, step), ?),"
                f" count = MAX(count, ?), open = ?,"
                f" severity = CASE WHEN {rises} THEN ? ELSE severity END,"
                f" message = CASE WHEN {rises} THEN ? ELSE message END,"
                f" hint = CASE WHEN {rises} THEN ? ELSE hint END"
                " WHERE run_id = ? AND anomaly_type = ? AND step = ? AND subject = ?",
                [_progress(row) for row in rows],
            )
        return new

    def get_anomalies(
        self, run_id: str, anomaly_types: Optional[Sequence[str]] = None
    ) -> list[AnomalyWrite]:
        sql = (
            "SELECT step, anomaly_type, severity, subject, value, baseline, threshold, message,"
            " detector, COALESCE(end_step, step), count, open, hint FROM anomalies"
            " WHERE run_id = ?"
        )
        params: list[Any] = [run_id]
        if anomaly_types is not None:
            types = list(anomaly_types)
            sql += f" AND anomaly_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        rows = self._read(sql + " ORDER BY step, id", params)
        return [anomaly_record(run_id, row) for row in rows]

    def anomaly_counts(self, project_name: Optional[str] = None) -> dict[str, dict[str, int]]:
        sql = "SELECT a.run_id, a.severity, count(*) FROM anomalies a"
        params: list[Any] = []
        if project_name is not None:
            sql += " JOIN runs r ON r.id = a.run_id WHERE r.project = ?"
            params.append(project_name)
        counts: dict[str, dict[str, int]] = {}
        for run_id, severity, number in self._read(sql + " GROUP BY a.run_id, a.severity", params):
            counts.setdefault(run_id, {})[severity] = number
        return counts


def _real(value: Any) -> Optional[float]:
    """NaN is stored as NULL in a REAL column; `anomaly_record` reads it back as NaN."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else number


def _progress(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The UPDATE parameters for an episode already stored, from its INSERT row."""
    run_id, step, kind, severity, subject, _, _, _, message, _, end, count, is_open, hint = row
    rank = _SEVERITY_RANK.get(severity, 0)
    return (end, count, is_open, rank, severity, rank, message, rank, hint, run_id, kind, step,
            subject)  # fmt: skip
