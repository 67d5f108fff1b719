"""A store written by schema version 1 (a row per point) opened by this tracer-postgres: its
points move into chunks, every value bit for bit, and the summaries a chart's reduction reads
agree with the points (the reduction equals `reduce_points` of the window)."""

from __future__ import annotations

import math
import struct

import psycopg
from psycopg import sql

from tests.postgres.helpers import schema_url, server_url
from tracer.storage.reduction import reduce_points
from tracer_postgres import PostgresStorage
from tracer_postgres.schema import MARK_TABLE, MIGRATIONS, SCHEMA_VERSION


def _bits(values: object) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]  # type: ignore[attr-defined]


def _loss(step: int) -> float:
    if step % 97 == 5:
        return (math.nan, math.inf, -math.inf)[step % 3]
    if step in (300, 301, 700):
        return -0.0 if step == 301 else 0.0  # ties of the lowest value across signs
    return math.sin(step * 0.01) + step * 1e-4


def test_version_1_points_move_into_chunks_exactly() -> None:
    url = schema_url("v1-store")
    schema = url.rsplit("=", 1)[1]
    loss = {step: _loss(step) for step in range(1000)}
    uneven = {step * step: float(step) for step in range(40)}
    with psycopg.connect(server_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(f"INSERT INTO {MARK_TABLE} VALUES ('tracer', 1)")
        connection.execute(
            "INSERT INTO runs (id, project, name, status, start_time) VALUES"
            " ('old', 'p', 'old', 'finished', 1.0)"
        )
        for name, points in (("loss", loss), ("uneven", uneven)):
            series = connection.execute(
                "INSERT INTO series (run_id, name, count, last_step, last_value)"
                " VALUES ('old', %s, %s, %s, %s) RETURNING id",
                (name, len(points), max(points), points[max(points)]),
            ).fetchone()
            assert series is not None
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO metric_points VALUES (%s, %s, %s)",
                    [(series[0], step, value) for step, value in points.items()],
                )
    storage = PostgresStorage(url)  # a writer: migrates
    try:
        for name, points in (("loss", loss), ("uneven", uneven)):
            steps, values = storage.get_metric_arrays("old", name)
            assert list(steps) == sorted(points)
            assert _bits(values) == _bits(points[step] for step in sorted(points))
        for start, end, budget in ((None, None, 40), (250, 800, 10), (None, 1200, 3)):
            expected = reduce_points(*storage.get_metric_window("old", "uneven", start, end), 6)
            assert storage.get_metric_reduced("old", "uneven", start, end, 6) == expected
            window = storage.get_metric_window("old", "loss", start, end)
            got = storage.get_metric_reduced("old", "loss", start, end, budget)
            want = reduce_points(*window, budget)
            assert (got.steps, got.indices, got.count) == (want.steps, want.indices, want.count)
            assert _bits(got.values + got.mins + got.maxs) == _bits(
                want.values + want.mins + want.maxs
            )
        storage.write_metrics("old", {"loss": ([1000, 1001], [5.0, math.nan])})
        assert list(storage.get_metric_arrays("old", "loss")[0]) == list(range(1002))
    finally:
        storage.close()
    with psycopg.connect(server_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        version = connection.execute(f"SELECT version FROM {MARK_TABLE}").fetchone()
        left = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'metric_points'",
            (schema,),
        ).fetchone()
    assert version == (SCHEMA_VERSION,) and left == (0,)
