"""Reads across many runs at once, in SQL: the histories the frame API streams into Arrow,
and the per-run metric summaries and events of a whole sweep that the runs table needs.

A base of `SQLiteStorage`, beside `MetricTables`, overriding the defaults of
`StorageBackend` (which ask run by run) with one query each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from tracer.exceptions import StorageError
from tracer.records import TIMESTAMP_METRIC, EventRecord, MetricHistory, MetricSummary
from tracer.storage.sqlite import codec
from tracer.storage.sqlite.connection import SQLiteConnection
from tracer.storage.sqlite.metrics import assemble_chunks

STREAM_ROWS = 64  # chunk rows fetched per lock hold while streaming histories


class BulkReads(SQLiteConnection):
    """`iter_metric_histories`, `metric_summaries` and `events_by_run` in one query each."""

    def iter_metric_histories(
        self, run_ids: Sequence[str], metrics: Optional[Sequence[str]] = None
    ) -> Iterator[MetricHistory]:
        """One small query orders the wanted series (runs as given, `_timestamp` first, then
        by name); one query then streams their chunks, a few rows per fetch, in that order:
        the `CROSS JOIN` fixes SQLite's loop nesting (the series list outside, the
        `(series_id, id)` index inside), so no ORDER BY makes SQLite sort the blobs. Each
        series' chunks are laid end to end (`assemble_chunks`) as soon as the next begins, so
        only one history's blobs are held besides what the caller keeps."""
        position = {run_id: n for n, run_id in reversed(list(enumerate(run_ids)))}
        sql = (
            "SELECT id, run_id, name FROM series"
            " WHERE run_id IN (SELECT value FROM json_each(?)) AND count > 0"
        )
        params: list[Any] = [json.dumps(list(position))]
        if metrics is not None:
            sql += " AND name IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(metrics)))
        series = sorted(
            self._read(sql, params),
            key=lambda row: (position[row[1]], row[2] != TIMESTAMP_METRIC, row[2]),
        )
        if not series:
            return
        chunks = self._stream(
            "SELECT w.key, c.id, c.first_step, c.last_step, c.count, c.steps, c.vals"
            " FROM json_each(?) w CROSS JOIN metric_chunks c ON c.series_id = w.value",
            [json.dumps([row[0] for row in series])],
        )
        current, last_id = -1, -1
        rows: list[Any] = []
        for key, chunk_id, *chunk in chunks:
            if key != current:
                if key < current:
                    raise StorageError("SQLite returned metric chunks out of series order")
                if rows:
                    yield _history(series[current], rows)
                current, rows = key, []
            elif chunk_id < last_id:
                raise StorageError("SQLite returned metric chunks out of write order")
            last_id = chunk_id
            rows.append(chunk)
        if rows:
            yield _history(series[current], rows)

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        """The rows of a query, fetched `STREAM_ROWS` at a time under the lock (other
        threads may use the connection between fetches)."""
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            cursor = self._conn.execute(sql, params)
        while True:
            with self._lock:
                if self._closed:
                    raise StorageError(f"storage {self.path} is closed")
                rows = cursor.fetchmany(STREAM_ROWS)
            if not rows:
                return
            yield from rows

    def metric_summaries(
        self, project_name: Optional[str] = None
    ) -> dict[str, list[MetricSummary]]:
        sql = (
            "SELECT s.run_id, s.name, s.count, s.last_step, s.last_value, s.min_value,"
            " s.max_value FROM series s"
        )
        params: list[Any] = []
        if project_name is not None:
            sql += " JOIN runs r ON r.id = s.run_id WHERE r.project = ? AND s.count > 0"
            params.append(project_name)
        else:
            sql += " WHERE s.count > 0"
        found: dict[str, list[MetricSummary]] = {}
        for run_id, name, count, last_step, last_value, low, high in self._read(
            sql + " ORDER BY s.run_id, s.name", params
        ):
            found.setdefault(run_id, []).append(
                {
                    "name": name,
                    "count": count,
                    "last_step": last_step,
                    "last_value": codec.decode_values(last_value)[0],
                    "min_value": float("nan") if low is None else low,
                    "max_value": float("nan") if high is None else high,
                }
            )
        return found

    def events_by_run(
        self, kind: str, project_name: Optional[str] = None
    ) -> dict[str, list[EventRecord]]:
        sql = "SELECT e.run_id, e.step, e.data FROM events e"
        params: list[Any] = []
        if project_name is not None:
            sql += " JOIN runs r ON r.id = e.run_id WHERE r.project = ? AND e.kind = ?"
            params.append(project_name)
        else:
            sql += " WHERE e.kind = ?"
        params.append(kind)
        found: dict[str, list[EventRecord]] = {}
        for run_id, step, data in self._read(sql + " ORDER BY e.run_id, e.step, e.id", params):
            found.setdefault(run_id, []).append(
                {"run_id": run_id, "step": step, "kind": kind, "data": json.loads(data)}
            )
        return found


def _history(series: Any, rows: list[Any]) -> MetricHistory:
    _, run_id, name = series
    steps, values = assemble_chunks(rows)
    return MetricHistory(run_id, name, steps, values)
