"""Metric histories in SQLite: one packed chunk per metric per flush, summaries kept on write.

A base of `SQLiteStorage`, on top of the connection; the backend owns the series id cache.
"""

from __future__ import annotations

import operator
import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import islice, pairwise
from typing import Any, Optional

from tracer.records import MetricSeries, MetricSummary, PointBatch
from tracer.storage.sqlite import codec, schema
from tracer.storage.sqlite.connection import SQLiteConnection


class MetricTables(SQLiteConnection):
    """The metric part of the storage interface over the `series` and `metric_chunks` tables."""

    _series_ids: dict[tuple[str, str], int]  # set by the backend before connecting

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
        in_order: dict[int, bool] = {}  # by id: the writer's series often share one steps list
        for name, (raw_steps, raw_values) in points.items():
            if not raw_steps:
                continue
            ordered = in_order.get(id(raw_steps))
            if ordered is None:
                ordered = in_order[id(raw_steps)] = codec.ascending(raw_steps)
            steps, values = codec.normalize(raw_steps, raw_values, ordered)
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
        return assemble_chunks(self._chunks(run_id, metric, None, None))

    def get_metric_window(
        self, run_id: str, metric: str, start: Optional[int] = None, end: Optional[int] = None
    ) -> tuple[Sequence[int], Sequence[float]]:
        """Only the chunks overlapping [start, end] are read and decoded (the SQL filters on
        their first and last steps), then cut to the window."""
        steps, values = assemble_chunks(self._chunks(run_id, metric, start, end))
        low = 0 if start is None else bisect_left(steps, start)
        high = len(steps) if end is None else bisect_right(steps, end)
        if (low, high) == (0, len(steps)):
            return steps, values
        return steps[low:high], values[low:high]

    def _chunks(
        self, run_id: str, metric: str, start: Optional[int], end: Optional[int]
    ) -> list[Any]:
        sql = (
            "SELECT c.first_step, c.last_step, c.count, c.steps, c.vals FROM metric_chunks c"
            " JOIN series s ON s.id = c.series_id WHERE s.run_id = ? AND s.name = ?"
        )
        params: list[Any] = [run_id, metric]
        if start is not None:
            sql += " AND c.last_step >= ?"
            params.append(start)
        if end is not None:
            sql += " AND c.first_step <= ?"
            params.append(end)
        return self._read(sql + " ORDER BY c.id", params)

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


def assemble_chunks(rows: Sequence[Any]) -> tuple[Sequence[int], Sequence[float]]:
    """Chunk rows (in write order) laid end to end: a `range` or int64 array of steps and a
    float64 array of values, sorted by step (a later write of a step wins) when they are not."""
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
