"""How points lie in `metric_chunks`: small flushes still end up in full chunks, steps written
again are merged (never stored twice, chunks never overlapping), a rewind cuts a chunk, and
the summaries that listings and the chart reduction read stay true through all of it."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from itertools import pairwise

import psycopg
import pytest

from tests.postgres.helpers import schema_url, server_url
from tracer.storage.reduction import reduce_points
from tracer_postgres import PostgresStorage
from tracer_postgres.chunks import CHUNK_POINTS


@pytest.fixture
def storage() -> Iterator[PostgresStorage]:
    opened = PostgresStorage(schema_url("chunks"))
    opened.create_run("r", "p", "r", 1.0, {})
    yield opened
    opened.close()


def _chunks(storage: PostgresStorage, metric: str) -> list[tuple[int, int, int]]:
    """(first step, last step, count) of each chunk of a series of run "r", in step order."""
    schema = storage.location.schema
    with psycopg.connect(server_url()) as connection:
        rows = connection.execute(
            f"SELECT c.first_step, c.last_step, c.count FROM {schema}.metric_chunks c"
            f" JOIN {schema}.series s ON s.id = c.series_id WHERE s.run_id = 'r'"
            " AND s.name = %s ORDER BY c.first_step",
            (metric,),
        ).fetchall()
    return [(int(a), int(b), int(n)) for a, b, n in rows]


def _bits(values: object) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]  # type: ignore[attr-defined]


def _assert_reduction_agrees(storage: PostgresStorage, metric: str) -> None:
    for points in (4, 30, 100):
        want = reduce_points(*storage.get_metric_window("r", metric), points)
        got = storage.get_metric_reduced("r", metric, points=points)
        assert (got.steps, got.indices, got.count) == (want.steps, want.indices, want.count)
        assert _bits(got.values + got.mins + got.maxs) == _bits(want.values + want.mins + want.maxs)


def test_small_flushes_fill_whole_chunks(storage: PostgresStorage) -> None:
    for first in range(0, 3000, 3):  # a slow run: three steps a flush
        steps = [first, first + 1, first + 2]
        values = [math.nan if s == 1500 else math.cos(s) for s in steps]
        storage.write_batch("r", {"loss": (steps, values), "lr": (steps, [0.1] * 3)})
    chunks = _chunks(storage, "loss")
    assert [n for _, _, n in chunks] == [CHUNK_POINTS] * 11 + [3000 - 11 * CHUNK_POINTS]
    assert all(b[0] > a[1] for a, b in pairwise(chunks))
    steps, values = storage.get_metric_arrays("r", "loss")
    assert list(steps) == list(range(3000))
    assert math.isnan(values[1500]) and values[2999] == math.cos(2999)
    summary = {m["name"]: m for m in storage.list_metrics("r")}["loss"]
    assert (summary["count"], summary["last_step"]) == (3000, 2999)
    _assert_reduction_agrees(storage, "loss")


def test_steps_written_again_are_merged_and_a_rewind_cuts(storage: PostgresStorage) -> None:
    storage.write_metrics("r", {"x": (list(range(600)), [float(s) for s in range(600)])})
    storage.write_metrics("r", {"x": (list(range(500, 700)), [-1.0] * 200)})  # resumed at 500
    storage.write_metrics("r", {"x": ([10, 20], [math.inf, 5.0])})  # a late rewrite
    chunks = _chunks(storage, "x")
    assert sum(n for _, _, n in chunks) == 700
    assert all(b[0] > a[1] for a, b in pairwise(chunks))
    series = storage.get_metric_timeseries("r", "x")
    assert series["steps"] == list(range(700))
    assert series["values"][10:21:10] == [math.inf, 5.0] and series["values"][650] == -1.0
    summary = {m["name"]: m for m in storage.list_metrics("r")}["x"]
    assert (summary["count"], summary["min_value"], summary["max_value"]) == (700, -1.0, math.inf)
    _assert_reduction_agrees(storage, "x")
    storage.rewind_run("r", 300)  # inside a chunk
    assert storage.get_metric_timeseries("r", "x")["steps"] == list(range(301))
    summary = {m["name"]: m for m in storage.list_metrics("r")}["x"]
    assert (summary["count"], summary["last_step"], summary["last_value"]) == (301, 300, 300.0)
    assert (summary["min_value"], summary["max_value"]) == (0.0, math.inf)
    storage.write_metrics("r", {"x": ([301, 302], [7.0, 8.0])})  # the resumed run goes on
    assert _chunks(storage, "x")[-1][1] == 302
    _assert_reduction_agrees(storage, "x")
