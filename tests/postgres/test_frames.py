"""The frame API on PostgreSQL: the same runs written through the real tracer API to a
PostgreSQL store and to SQLite give the same long tables (every value bit for bit, NaN and
+-Inf included, wall times, ranks), the same pandas frame and the same runs table; the
backend streams its histories in one query (`iter_metric_histories`, its override)."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest

import tracer
from tests.postgres.helpers import schema_url
from tracer.analysis import QueryEngine

pa = pytest.importorskip("pyarrow")

STEPS = 200
SPECIAL = {50: math.nan, 51: math.inf, 52: -math.inf, 53: -0.0}


def _write_runs(storage_path: str) -> None:
    for run_id, lr in (("slow", 0.01), ("fast", 0.1)):
        run = tracer.init(
            project="team", run_id=run_id, run_name=run_id, storage_path=storage_path,
            config={"lr": lr, "model": {"depth": 2}}, track_system_metrics=False,
        )  # fmt: skip
        for step in range(STEPS):
            loss = SPECIAL.get(step, 1.0 / (1 + lr * step)) if run_id == "fast" else 1 / (1 + step)
            tracer.log({"loss": loss})
            if step % 10 == 0:
                tracer.log({"eval/accuracy": step / STEPS})
            tracer.step()
        run.finish()


@pytest.fixture
def stores(tmp_path: Any) -> Iterator[tuple[QueryEngine, QueryEngine]]:
    url = schema_url("frames")
    sqlite_path = str(tmp_path / "store")
    _write_runs(url)
    _write_runs(sqlite_path)
    with QueryEngine(url) as postgres, QueryEngine(sqlite_path) as sqlite:
        yield postgres, sqlite


def _bits(values: list[Any]) -> list[Any]:
    return [None if v is None else struct.pack("<d", v) for v in values]


def test_to_arrow_is_the_same_on_both_stores(stores: tuple[QueryEngine, QueryEngine]) -> None:
    postgres, sqlite = stores
    mine, theirs = postgres.to_arrow(["fast", "slow"]), sqlite.to_arrow(["fast", "slow"])
    assert mine.num_rows == theirs.num_rows == 2 * (STEPS + STEPS // 10)
    for column in ("run_id", "step", "metric", "rank"):
        assert mine.column(column).to_pylist() == theirs.column(column).to_pylist(), column
    assert _bits(mine.column("value").to_pylist()) == _bits(theirs.column("value").to_pylist())
    assert mine.column("time").null_count == 0
    rows = mine.to_pylist()
    loss = [r["value"] for r in rows if (r["run_id"], r["metric"]) == ("fast", "loss")]
    assert _bits(loss[50:54]) == _bits(list(SPECIAL.values()))
    only = postgres.to_arrow("fast", metrics=["eval/accuracy", "missing"])
    assert set(only.column("metric").to_pylist()) == {"eval/accuracy"}


def test_pandas_and_runs_table_on_postgres(stores: tuple[QueryEngine, QueryEngine]) -> None:
    pytest.importorskip("pandas")
    postgres, sqlite = stores
    frame = postgres.to_pandas(["slow", "fast"], wide=True)
    assert frame.equals(sqlite.to_pandas(["slow", "fast"], wide=True).assign(time=frame.time))
    runs = postgres.runs_frame("team")
    assert sorted(runs["config.lr"]) == [0.01, 0.1]
    assert set(runs["config.model.depth"]) == {2}
    assert list(runs.columns) == list(sqlite.runs_frame("team").columns)
