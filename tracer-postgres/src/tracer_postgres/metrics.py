"""Metric histories in PostgreSQL: packed chunks in (binary COPY), chunks out.

Writing a flush: the series are interned (one statement for the new ones), locked with their
last stored step (and their last chunk, when it holds fewer than 256 points) in one statement,
and each series' points are cut into chunks (`tracer_postgres.chunks`) copied into
`metric_chunks` in one binary COPY: a row per 256 points, not a row per point. A series whose
last chunk is not full has it filled up first (taken out and copied back with the new points
after its own), so a run that flushes a few steps a second still reads back in full chunks. A
series whose points reach back into its stored steps (a resumed run writing its steps again, a
flush retried after its commit landed) has the overlapped chunks merged instead
(`chunk_writes.merge_points`): a later write of a step wins, nothing is stored twice. The
series' summaries (count, last point, min, max) are updated in the same transaction.

Reading a history: the chunks overlapping the asked steps come back in binary, a few thousand
rows for a million points; their values become one float64 `array` and their steps one `range`
(evenly spaced chunks that continue one another, the usual case) or an int64 `array`. NaN and
+-Inf come back bit for bit.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import islice, pairwise
from typing import Any, Optional

import psycopg

from tracer.storage import MetricSeries, MetricSummary
from tracer.storage.base import PointBatch
from tracer.storage.reduction import DEFAULT_POINTS, Reduced
from tracer_postgres.chunk_writes import (
    delete_chunks,
    insert_chunks,
    lock_series,
    merge_points,
    points_of,
    refresh_summaries,
)
from tracer_postgres.chunks import Chunk, decode_steps, make_chunks, unpack
from tracer_postgres.connection import PostgresConnection
from tracer_postgres.reduction import reduced_window


def normalized(
    steps: Sequence[int], values: Sequence[float]
) -> tuple[Sequence[int], Sequence[float]]:
    """Steps strictly ascending (as the writer sends them), else sorted with a later point of
    a step winning."""
    if all(map(operator.lt, steps, islice(steps, 1, None))):
        return steps, values
    latest = dict(zip(steps, values, strict=True))
    ordered = sorted(latest)
    return ordered, [latest[step] for step in ordered]


def assemble(rows: Sequence[Sequence[Any]]) -> tuple[Sequence[int], array[float]]:
    """Chunk rows (in step order, not overlapping) laid end to end: one `range` of steps when
    every chunk is evenly spaced and continues the last with the same stride, else an int64
    array; the values as one float64 array."""
    values = unpack("d", b"".join(row[4] for row in rows))
    pieces = [decode_steps(first, last, count, blob) for first, last, count, blob, _ in rows]
    joined_range = _join_ranges(pieces)
    if joined_range is not None:
        return joined_range, values
    joined = array("q")
    for piece in pieces:
        joined.extend(piece)
    return joined, values


def _join_ranges(pieces: Sequence[Sequence[int]]) -> Optional[range]:
    if not pieces:
        return range(0)
    ranges = [piece for piece in pieces if isinstance(piece, range)]
    if len(ranges) != len(pieces):
        return None
    stride = next((r.step for r in ranges if len(r) > 1), 1)
    for before, after in pairwise(ranges):
        if (len(after) > 1 and after.step != stride) or after.start != before[-1] + stride:
            return None
    return range(ranges[0].start, ranges[-1][-1] + 1, stride)


class MetricTables(PostgresConnection):
    """The metric part of the storage interface over `series` and `metric_chunks`."""

    _series_ids: dict[tuple[str, str], int]  # set by the backend; cleared on rollback

    def write_metrics(self, run_id: str, points: PointBatch) -> None:
        with self._transaction() as connection:
            self._write_metrics(connection, run_id, points)

    def _intern(self, connection: psycopg.Connection[Any], run_id: str, names: list[str]) -> None:
        missing = [name for name in names if (run_id, name) not in self._series_ids]
        if not missing:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO series (run_id, name) SELECT %s, unnest(%s::text[])"
                " ON CONFLICT (run_id, name) DO NOTHING",
                (run_id, missing),
            )
            cursor.execute(
                "SELECT name, id FROM series WHERE run_id = %s AND name = ANY(%s)",
                (run_id, missing),
            )
            for name, series_id in cursor.fetchall():
                self._series_ids[(run_id, name)] = series_id

    def _write_metrics(
        self, connection: psycopg.Connection[Any], run_id: str, points: PointBatch
    ) -> None:
        batch: list[tuple[str, Sequence[int], Sequence[float]]] = []
        for name, (steps, values) in points.items():
            if len(steps):
                batch.append((name, *normalized(steps, values)))
        if not batch:
            return
        self._intern(connection, run_id, [name for name, _, _ in batch])
        series = [
            (self._series_ids[(run_id, name)], steps, values) for name, steps, values in batch
        ]
        with connection.cursor() as cursor:
            tails = lock_series(cursor, [series_id for series_id, _, _ in series])
            appended = []
            overlapping = []
            refilled: list[tuple[int, int]] = []
            for series_id, steps, values in series:
                last, tail = tails.get(series_id, (None, None))
                if last is not None and last >= steps[0]:
                    overlapping.append((series_id, steps, values))
                    continue
                chunks = make_chunks(steps, values)
                if tail is not None:  # the last chunk is not full: fill it up first
                    tail_steps, tail_values = points_of([tail])
                    chunks = make_chunks([*tail_steps, *steps], [*tail_values, *values])
                    refilled.append((series_id, tail[0]))
                appended.append((series_id, steps, values, chunks))
            if refilled:
                delete_chunks(cursor, refilled)
            if appended:
                insert_chunks(
                    cursor, ((sid, chunk) for sid, _, _, chunks in appended for chunk in chunks)
                )
                self._add_to_summaries(cursor, appended)
            for series_id, steps, values in overlapping:
                merge_points(cursor, series_id, steps, values)
            if overlapping:
                refresh_summaries(cursor, [series_id for series_id, _, _ in overlapping])

    @staticmethod
    def _add_to_summaries(
        cursor: psycopg.Cursor[Any],
        appended: list[tuple[int, Sequence[int], Sequence[float], list[Chunk]]],
    ) -> None:
        """Series whose new points all come after their stored ones: counts grow, the last
        point moves, the extremes widen."""
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for series_id, steps, values, chunks in appended:
            lowest = [c.lowest for c in chunks if c.lowest is not None]
            highest = [c.highest for c in chunks if c.highest is not None]
            row = (
                series_id, len(steps), int(steps[-1]), float(values[-1]),
                min(lowest) if lowest else None, max(highest) if highest else None,
            )  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        cursor.execute(
            "UPDATE series s SET count = s.count + u.added, last_value = u.last_value,"
            " last_step = u.last_step,"
            " min_value = LEAST(s.min_value, u.low), max_value = GREATEST(s.max_value, u.high)"
            " FROM unnest(%s::integer[], %s::bigint[], %s::bigint[], %s::float8[],"
            "   %s::float8[], %s::float8[]) AS u(id, added, last_step, last_value, low, high)"
            " WHERE s.id = u.id",
            columns,
        )

    # -- reads ------------------------------------------------------------------------------
    def _chunk_rows(
        self, run_id: str, metric: str, start: Optional[int], end: Optional[int]
    ) -> list[Any]:
        """The raw rows of the chunks overlapping [start, end], in step order."""
        bounds = ""
        params: list[Any] = [run_id, metric]
        if start is not None:
            bounds += " AND last_step >= %s"
            params.append(start)
        if end is not None:
            bounds += " AND first_step <= %s"
            params.append(end)
        return self._read(
            "SELECT first_step, last_step, count, steps, vals FROM metric_chunks"
            " WHERE series_id = (SELECT id FROM series WHERE run_id = %s AND name = %s)"
            f"{bounds} ORDER BY first_step",
            params,
            binary=True,
        )

    def _points(
        self, run_id: str, metric: str, start: Optional[int], end: Optional[int]
    ) -> tuple[Sequence[int], Sequence[float]]:
        steps, values = assemble(self._chunk_rows(run_id, metric, start, end))
        low = 0 if start is None else bisect_left(steps, start)
        high = len(steps) if end is None else bisect_right(steps, end)
        if (low, high) == (0, len(steps)):
            return steps, values
        return steps[low:high], values[low:high]

    def get_metric_timeseries(self, run_id: str, metric: str) -> MetricSeries:
        steps, values = self._points(run_id, metric, None, None)
        return {"steps": list(steps), "values": list(values)}

    def get_metric_arrays(self, run_id: str, metric: str) -> tuple[Sequence[int], Sequence[float]]:
        return self._points(run_id, metric, None, None)

    def get_metric_window(
        self, run_id: str, metric: str, start: Optional[int] = None, end: Optional[int] = None
    ) -> tuple[Sequence[int], Sequence[float]]:
        """Only the chunks overlapping the window leave the database (an index range scan),
        cut to it here."""
        return self._points(run_id, metric, start, end)

    def get_metric_reduced(
        self,
        run_id: str,
        metric: str,
        start: Optional[int] = None,
        end: Optional[int] = None,
        points: int = DEFAULT_POINTS,
    ) -> Reduced:
        """From the chunks' summaries, reading only the points the rule needs
        (`tracer_postgres.reduction`)."""
        return reduced_window(
            self._read, run_id, metric, start, end, points,
            lambda: self._points(run_id, metric, start, end),
        )  # fmt: skip

    def list_metrics(self, run_id: str) -> list[MetricSummary]:
        rows = self._read(
            "SELECT name, count, last_step, last_value, min_value, max_value FROM series"
            " WHERE run_id = %s AND count > 0 ORDER BY name",
            (run_id,),
        )
        nan = float("nan")
        return [
            {
                "name": name,
                "count": int(count),
                "last_step": int(last_step),
                "last_value": float(last_value),
                "min_value": nan if low is None else float(low),
                "max_value": nan if high is None else float(high),
            }
            for name, count, last_step, last_value, low, high in rows
        ]
