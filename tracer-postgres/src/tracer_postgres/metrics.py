"""Metric histories in PostgreSQL: binary COPY in, whole histories out as two packed arrays.

Writing a flush: the series are interned (one statement for the new ones), the points of
every series are laid into one binary COPY buffer (a fixed 34 bytes a point, packed with
`struct`, no per-point Python object), and copied straight into `metric_points` under a
savepoint. When some (series, step) is already stored (a resumed run writing its steps again,
or a flush retried after its commit landed), the copy fails on the key, is rolled back to the
savepoint, and goes into a temporary staging table instead, from which
`INSERT ... ON CONFLICT DO UPDATE` replaces the stored values: a later write of a step wins,
and nothing is ever stored twice. The series' summaries (count, last point, min, max) are
updated in the same transaction.

Reading a history: the database packs the steps and the values of the asked range into two
`bytea` (`int8send`/`float8send` aggregated in step order) sent in binary, which become an
int64 and a float64 `array` with one `frombytes`: a million points in a few hundred
milliseconds, NaN and +-Inf bit for bit.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice, repeat
from typing import Any, Optional

import psycopg
import psycopg.errors

from tracer.records import TIMESTAMP_METRIC
from tracer.storage import MetricSeries, MetricSummary
from tracer.storage.base import MetricHistory, PointBatch
from tracer_postgres.connection import PostgresConnection

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_ROW_HEAD = struct.Struct(">hiii")  # 3 fields; int4 series id (4 bytes); then int8 length
_ROW_TAIL = struct.Struct(">qid")  # step; float8 length; value
_COPY_POINTS = "COPY {table} (series_id, step, value) FROM STDIN (FORMAT BINARY)"
_STAGING = "tracer_staging"
_BIG_ENDIAN = sys.byteorder == "big"

Summary = tuple[int, int, int, float, Optional[float], Optional[float]]


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


def _extremes(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """The lowest and highest non-NaN value (None when all are NaN)."""
    total = sum(values)  # NaN only if a NaN is present (or inf + -inf)
    ordered = values if total == total else [v for v in values if v == v]
    return (float(min(ordered)), float(max(ordered))) if ordered else (None, None)


def encode_points(series: Iterable[tuple[int, Sequence[int], Sequence[float]]]) -> bytes:
    """One binary COPY stream of (series_id, step, value) rows."""
    parts = [_COPY_HEADER]
    for series_id, steps, values in series:
        head = _ROW_HEAD.pack(3, 4, series_id, 8)
        parts.append(head)
        parts.append(head.join(map(_ROW_TAIL.pack, steps, repeat(8), values)))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _unpack(blob: Optional[bytes], code: str) -> array[Any]:
    packed = array(code)
    if blob:
        packed.frombytes(blob)
        if not _BIG_ENDIAN:
            packed.byteswap()
    return packed


class MetricTables(PostgresConnection):
    """The metric part of the storage interface over `series` and `metric_points`."""

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
        rows = [(self._series_ids[(run_id, name)], steps, values) for name, steps, values in batch]
        stream = encode_points(rows)
        try:
            with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(_COPY_POINTS.format(table="metric_points")) as copy,
            ):
                copy.write(stream)
            added = {series_id: len(steps) for series_id, steps, _ in rows}
        except psycopg.errors.UniqueViolation:  # some steps are stored already: upsert
            added = self._upsert(connection, stream)
        summaries = []
        for series_id, steps, values in rows:
            low, high = _extremes(values)
            summaries.append(
                (series_id, added.get(series_id, 0), int(steps[-1]), float(values[-1]), low, high)
            )
        self._update_summaries(connection, summaries)

    @staticmethod
    def _upsert(connection: psycopg.Connection[Any], stream: bytes) -> dict[int, int]:
        """Points through a staging table, replacing stored steps; new points per series."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (series_id integer,"
                " step bigint, value double precision) ON COMMIT DELETE ROWS"
            )
            with cursor.copy(_COPY_POINTS.format(table=_STAGING)) as copy:
                copy.write(stream)
            cursor.execute(
                "WITH written AS (INSERT INTO metric_points (series_id, step, value)"
                f" SELECT series_id, step, value FROM {_STAGING}"
                " ON CONFLICT (series_id, step) DO UPDATE SET value = EXCLUDED.value"
                " RETURNING series_id, xmax = 0 AS fresh)"
                " SELECT series_id, count(*) FILTER (WHERE fresh) FROM written GROUP BY series_id"
            )
            added = {int(series_id): int(count) for series_id, count in cursor.fetchall()}
            cursor.execute(f"DELETE FROM {_STAGING}")
        return added

    @staticmethod
    def _update_summaries(
        connection: psycopg.Connection[Any], summaries: list[tuple[Any, ...]]
    ) -> None:
        columns = list(zip(*summaries, strict=True))
        connection.execute(
            "UPDATE series s SET count = s.count + u.added,"
            " last_value = CASE WHEN s.last_step IS NULL OR s.last_step <= u.last_step"
            "   THEN u.last_value ELSE s.last_value END,"
            " last_step = GREATEST(s.last_step, u.last_step),"
            " min_value = LEAST(s.min_value, u.low), max_value = GREATEST(s.max_value, u.high)"
            " FROM unnest(%s::integer[], %s::bigint[], %s::bigint[], %s::float8[],"
            "   %s::float8[], %s::float8[]) AS u(id, added, last_step, last_value, low, high)"
            " WHERE s.id = u.id",
            [list(column) for column in columns],
        )

    # -- reads ------------------------------------------------------------------------------
    def _points(
        self, run_id: str, metric: str, start: Optional[int], end: Optional[int]
    ) -> tuple[array[int], array[float]]:
        bounds = ""
        params: list[Any] = [run_id, metric]
        if start is not None:
            bounds += " AND step >= %s"
            params.append(start)
        if end is not None:
            bounds += " AND step <= %s"
            params.append(end)
        rows = self._read(
            "SELECT string_agg(int8send(step), ''), string_agg(float8send(value), '')"
            " FROM (SELECT step, value FROM metric_points WHERE series_id ="
            " (SELECT id FROM series WHERE run_id = %s AND name = %s)"
            f"{bounds} ORDER BY step) AS ordered",
            params,
            binary=True,
        )
        steps, values = _unpack(rows[0][0], "q"), _unpack(rows[0][1], "d")
        if not all(map(operator.lt, steps, islice(steps, 1, None))):  # a parallel plan's order
            pairs = sorted(zip(steps, values, strict=True))
            steps, values = array("q", [p[0] for p in pairs]), array("d", [p[1] for p in pairs])
        return steps, values

    def get_metric_timeseries(self, run_id: str, metric: str) -> MetricSeries:
        steps, values = self._points(run_id, metric, None, None)
        return {"steps": steps.tolist(), "values": values.tolist()}

    def get_metric_arrays(self, run_id: str, metric: str) -> tuple[Sequence[int], Sequence[float]]:
        return self._points(run_id, metric, None, None)

    def get_metric_window(
        self, run_id: str, metric: str, start: Optional[int] = None, end: Optional[int] = None
    ) -> tuple[Sequence[int], Sequence[float]]:
        """Only the points of the window leave the database (an index range scan)."""
        return self._points(run_id, metric, start, end)

    def iter_metric_histories(
        self, run_ids: Sequence[str], metrics: Optional[Sequence[str]] = None
    ) -> Iterator[MetricHistory]:
        """One query for every history asked: each series' points packed into two `bytea`
        (as `_points`), one row per series in the interface's order (runs as given,
        `_timestamp` first, names by code point: `COLLATE "C"`), read through a server-side
        cursor one row at a time, so only one history is in flight."""
        wanted = "" if metrics is None else " AND s.name = ANY(%s)"
        query = (
            "SELECT s.run_id, s.name,"
            " string_agg(int8send(p.step), '' ORDER BY p.step),"
            " string_agg(float8send(p.value), '' ORDER BY p.step)"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS w(run_id, position)"
            " JOIN series s ON s.run_id = w.run_id"
            " JOIN metric_points p ON p.series_id = s.id"
            f" WHERE s.count > 0{wanted}"
            " GROUP BY w.position, s.id, s.run_id, s.name"
            ' ORDER BY w.position, s.name <> %s, s.name COLLATE "C"'
        )
        params: list[Any] = [list(dict.fromkeys(run_ids))]
        if metrics is not None:
            params.append(list(metrics))
        params.append(TIMESTAMP_METRIC)
        try:
            with (
                self._connection() as connection,
                connection.transaction(),
                connection.cursor("tracer_histories", binary=True) as cursor,
            ):
                cursor.itersize = 1  # a row is a whole history
                cursor.execute(query, params)
                for run_id, name, steps_blob, values_blob in cursor:
                    steps, values = _unpack(steps_blob, "q"), _unpack(values_blob, "d")
                    yield MetricHistory(run_id, name, steps, values)
        except psycopg.Error as error:
            raise self._translate(error) from error

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
