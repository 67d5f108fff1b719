"""Readers work unchanged on PostgreSQL: `QueryEngine`, the `tracer` command (a subprocess),
the HTML report and the dashboard's API, on runs written by the real tracer API. The same
runs are written to SQLite too, and the dashboard's JSON of a series must be the same."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.postgres.helpers import drop_schema_of, shared_schema_url
from tracer.analysis import QueryEngine

STEPS = 300
SPIKE_STEP = 100
NAN_STEP = 250


def _write_runs(storage_path: str) -> None:
    for run_id, kind in (("calm", "calm"), ("spiky", "spiky")):
        run = tracer.init(
            project="team", run_id=run_id, run_name=run_id, storage_path=storage_path,
            config={"lr": 0.1, "kind": kind}, track_system_metrics=False,
        )  # fmt: skip
        for step in range(STEPS):
            loss = 2.0 / (1 + step) + 0.01 * ((step * 7919) % 11 - 5) / 5
            if kind == "spiky" and step == SPIKE_STEP:
                loss = 50.0
            if kind == "spiky" and step >= NAN_STEP:
                loss = math.inf if step == NAN_STEP else math.nan
            tracer.log({"loss": loss, "accuracy": min(1.0, step / 200)})
            tracer.step()
        run.finish()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the PostgreSQL URL, an SQLite directory) holding the same two runs."""
    if not os.environ.get("TRACER_TEST_POSTGRES_URL"):
        pytest.skip("no PostgreSQL server")
    url = shared_schema_url("readers")
    drop_schema_of(url)
    sqlite_path = str(tmp_path_factory.mktemp("readers") / "store")
    _write_runs(url)
    _write_runs(sqlite_path)
    yield url, sqlite_path
    drop_schema_of(url)


def test_query_engine_answers_as_on_sqlite(stores: tuple[str, str]) -> None:
    url, sqlite_path = stores
    with QueryEngine(url) as postgres, QueryEngine(sqlite_path) as sqlite:
        assert [r["run_id"] for r in postgres.list_runs("team")] == ["spiky", "calm"]
        assert _timeless(postgres.get_run_summary("spiky")) == _timeless(
            sqlite.get_run_summary("spiky")
        )
        compared = postgres.compare_runs("calm", "spiky", ["loss", "accuracy"])
        assert _timeless(compared) == _timeless(
            sqlite.compare_runs("calm", "spiky", ["loss", "accuracy"])
        )
        assert compared["metrics"]["loss"]["first_divergence_step"] is not None
        kinds = {a["anomaly_type"] for a in postgres.get_anomalies("spiky")}
        assert kinds == {a["anomaly_type"] for a in sqlite.get_anomalies("spiky")} and kinds
        history = postgres.get_metric_history("spiky", "loss")
        assert history["steps"] == list(range(STEPS))
        assert math.isinf(history["values"][NAN_STEP])
        assert all(math.isnan(v) for v in history["values"][NAN_STEP + 1 :])
        assert postgres.storage.anomaly_counts("team") == sqlite.storage.anomaly_counts("team")


def _timeless(value: dict[str, Any]) -> str:
    """The JSON of a summary without the wall-clock fields (the two stores were written at
    different times)."""
    kept = {k: v for k, v in value.items() if k not in ("start_time", "end_time", "duration")}
    return json.dumps(kept, sort_keys=True, default=str)


def _tracer(*args: str, storage: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracer.cli", *args, "--storage", storage],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_every_cli_command_reads_postgres(stores: tuple[str, str], tmp_path: Path) -> None:
    url, _ = stores
    listed = _tracer("runs", "--json", storage=url)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == ["calm", "spiky"]
    for args in (
        ("runs",),
        ("show", "spiky"),
        ("compare", "calm", "spiky"),
        ("anomalies", "spiky"),
        ("export", "spiky", "--format", "csv", "-o", str(tmp_path / "spiky.csv")),
        ("plot", "spiky", "loss", "-o", str(tmp_path / "loss.svg")),
        ("report", "calm", "spiky", "-o", str(tmp_path / "report.html")),
        ("gc", "--dry-run"),
    ):
        done = _tracer(*args, storage=url)
        assert done.returncode == 0, (args, done.stderr)
    assert "spiky" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "spiky.csv").read_text().count("\n") == STEPS + 1
    missing = _tracer("show", "nope", storage=url)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


def test_the_dashboard_api_sends_what_it_sends_for_sqlite(stores: tuple[str, str]) -> None:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from tracer.ui.app import create_app

    url, sqlite_path = stores
    answers: list[list[Any]] = []
    for location in (url, sqlite_path):
        with TestClient(create_app(location)) as client:
            runs = client.get("/api/runs", params={"project": "team"})
            assert runs.status_code == 200
            got = [[(r["run_id"], r["anomalies"], r["steps"]) for r in runs.json()["runs"]]]
            for params in ({}, {"points": 40}, {"start": 90, "end": 260, "points": 20}):
                series = client.get("/api/runs/spiky/series", params={"metric": "loss", **params})
                assert series.status_code == 200, series.text
                body = series.json()
                body.pop("times", None)  # wall-clock times differ between the two writes
                got.append(body)
            compare = client.get("/api/compare", params={"runs": "calm,spiky", "metric": "loss"})
            assert compare.status_code == 200
            answers.append(got)
    assert answers[0] == answers[1]
    reduced = answers[0][2]
    assert SPIKE_STEP in reduced["steps"] and NAN_STEP in reduced["steps"]
