"""The dashboard's JSON API against a real store written by real runs (Starlette's
TestClient, no server): every endpoint's shape, the reduction's guarantees at every zoom,
errors, and the guard (CSP, nosniff, token, host)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")  # the extra tracer-core[ui]; skipped without it
pytest.importorskip("uvicorn")
from starlette.testclient import TestClient

from tests.ui.stores import (
    INF_STEP,
    NAN_STEP,
    SPIKE_STEP,
    STEPS,
    MetricReadCounter,
    write_store,
)
from tracer.analysis import QueryEngine
from tracer.ui.app import CSP, create_app
from tracer.ui.live import LiveRuns

RUN_ROW_KEYS = {
    "run_id", "project", "name", "status", "steps", "start_time", "end_time", "heartbeat",
    "duration_s", "tags", "notes", "config", "anomalies", "host", "pid",
}  # fmt: skip
SERIES_KEYS = {
    "run_id", "metric", "start", "end", "count", "reduced", "steps", "values", "mins", "maxs",
    "times", "nonfinite",
}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    location = tmp_path_factory.mktemp("ui") / "store"
    return location, write_store(location)


@pytest.fixture
def client(store: tuple[Path, dict[str, str]]) -> Iterator[TestClient]:
    with TestClient(create_app(str(store[0]))) as client:
        yield client


def strict_json(text: str) -> Any:
    """JSON as a browser parses it: NaN or Infinity in it is an error."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def series(client: TestClient, run: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run}/series", params={"metric": "loss", **params})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = strict_json(response.text)
    return payload


# -- runs ---------------------------------------------------------------------------------------
def test_runs_lists_every_run_with_counts_and_projects(client: TestClient) -> None:
    response = client.get("/api/runs")
    assert response.status_code == 200
    payload = strict_json(response.text)
    assert payload["projects"] == ["nlp", "vision"]
    rows = {row["name"]: row for row in payload["runs"]}
    assert set(rows) == {"spiky", "calm", "other"}
    for row in rows.values():
        assert set(row) >= RUN_ROW_KEYS
        assert row["status"] == "finished" and row["steps"] == STEPS
        assert set(row["anomalies"]) == {"critical", "warning", "info"}
        assert row["duration_s"] >= 0
    spiky = rows["spiky"]
    assert spiky["anomalies"]["critical"] >= 1 and spiky["anomalies"]["warning"] >= 1
    assert spiky["tags"] == ["baseline", "spiky"] and spiky["config"]["model"] == {"depth": 4}
    assert rows["other"]["config"]["eps"] == "NaN"  # free-form data spells it out
    only = strict_json(client.get("/api/runs", params={"project": "nlp"}).text)
    assert [row["name"] for row in only["runs"]] == ["other"]
    assert only["projects"] == ["nlp", "vision"]


def test_runs_and_live_polls_never_read_a_run_s_data(store: tuple[Path, dict[str, str]]) -> None:
    """Listing (and each live poll) reads run rows and anomaly counts only: no history,
    checkpoint, event, sample or even anomaly list, however long the runs are."""
    spy = MetricReadCounter(str(store[0]))
    try:
        with TestClient(create_app(spy)) as client:
            for _ in range(3):
                assert client.get("/api/runs").status_code == 200
        assert spy.calls == {}
        live = LiveRuns(spy)
        live.poll()
        live.poll()
        assert set(spy.calls) <= {"get_anomalies"}  # the first poll learns the episodes
        before = dict(spy.calls)
        live.poll()
        assert spy.calls == before  # nothing changed: nothing read
    finally:
        spy.close()


# -- one run ------------------------------------------------------------------------------------
def test_run_view_shape(client: TestClient, store: tuple[Path, dict[str, str]]) -> None:
    payload = strict_json(client.get("/api/runs/spiky").text)
    assert set(payload) == {
        "run", "series", "checkpoints", "model_saves", "anomalies", "heatmap", "samples",
    }  # fmt: skip
    assert payload["run"]["run_id"] == store[1]["spiky"]
    assert set(payload["run"]) >= RUN_ROW_KEYS
    by_name = {s["name"]: s for s in payload["series"]}
    assert set(by_name) == {"loss", "acc"}  # hidden series (_timestamp) are not listed
    loss = by_name["loss"]
    assert {"name", "count", "last_step", "last_value", "min", "max"} <= set(loss)
    assert loss["count"] == STEPS and loss["max"] is None and loss["nonfinite"] == {"max": "+Inf"}
    found = {(a["anomaly_type"], a["step"], a["severity"]) for a in payload["anomalies"]}
    assert {("nan_or_inf", NAN_STEP, "critical"), ("nan_or_inf", INF_STEP, "critical")} <= found
    assert ("loss_spike", SPIKE_STEP, "warning") in found
    for anomaly in payload["anomalies"]:
        assert {
            "step", "end_step", "anomaly_type", "severity", "subject", "message", "value",
            "baseline", "threshold", "hint", "count", "open",
        } <= set(anomaly)  # fmt: skip
    checkpoints = payload["checkpoints"]
    assert checkpoints and all(
        set(c) == {"step", "timestamp", "reason", "healthy", "last_healthy"} for c in checkpoints
    )
    first_bad = min(a["step"] for a in payload["anomalies"] if a["severity"] != "info")
    assert all(c["healthy"] == (c["step"] < first_bad) for c in checkpoints)
    assert [c["step"] for c in checkpoints if c["last_healthy"]] == [
        max(c["step"] for c in checkpoints if c["step"] < first_bad)
    ]
    saves = payload["model_saves"]
    assert [(s["step"], s["path"]) for s in saves] == [(400, "ckpt-400.pt"), (1800, "ckpt-1800.pt")]
    assert [s["step"] for s in saves if s["last_healthy"]] == [400]  # 1800 is after the spike
    heatmap = payload["heatmap"]
    assert set(heatmap) == {"layers", "steps", "norms", "nonfinite"}


def test_run_view_heatmap_and_samples_of_a_watched_model(tmp_path: Path) -> None:
    """A NaN in a watched torch model's input: its layers' norms per checkpoint step, the
    NaN cells listed, never sent as numbers, and the batch sample captured at the NaN."""
    torch = pytest.importorskip("torch")
    import tracer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(
        "torch", run_name="nan-input", storage_path=str(tmp_path / "s"), checkpoint_interval=5,
        capture_samples=2, write_buffer_size=1, track_system_metrics=False,
    )  # fmt: skip
    tracer.watch(model, optimizer)
    for step in range(30):
        optimizer.zero_grad()
        batch = torch.randn(8, 4)
        if step == 17:
            batch[0, 0] = float("nan")
        loss = torch.nn.functional.mse_loss(model(batch), torch.randn(8, 2))
        loss.backward()
        optimizer.step()
        tracer.log({"loss": loss.item()})
        tracer.step()
    tracer.finish()
    with TestClient(create_app(str(tmp_path / "s"))) as client:
        payload = strict_json(client.get(f"/api/runs/{run.run_id}").text)
    heatmap = payload["heatmap"]
    assert heatmap["layers"] == [name for name, _ in model.named_parameters()]
    assert len(heatmap["norms"]) == len(heatmap["steps"]) >= 5
    assert all(len(row) == len(heatmap["layers"]) for row in heatmap["norms"])
    assert heatmap["nonfinite"], "the NaN weights after step 17 are listed"
    for column, layer, kind in heatmap["nonfinite"]:
        assert heatmap["norms"][column][layer] is None and kind == "NaN"
        assert heatmap["steps"][column] >= 17
    samples = payload["samples"]
    for sample in samples:
        assert {"step", "reason", "role", "name", "shape", "dtype", "values", "truncated"} <= set(
            sample
        )
    if 17 in heatmap["steps"]:  # the anomaly checkpoint of the NaN step: its batch is kept
        assert any(s["nonfinite"] for s in samples if s["step"] == 17)


def test_unknown_run_and_metric_are_404_json(client: TestClient) -> None:
    for path in ("/api/runs/nope", "/api/runs/nope/series?metric=loss"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json()
    response = client.get("/api/runs/spiky/series", params={"metric": "nope"})
    assert response.status_code == 404 and "nope" in response.json()["error"]
    assert client.get("/api/runs/spiky/series").status_code == 400  # metric= missing
    assert client.get("/api/runs/spiky/series?metric=loss&points=x").status_code == 400


# -- series and zoom ------------------------------------------------------------------------------
def test_series_shape_and_full_resolution_when_small(client: TestClient) -> None:
    payload = series(client, "spiky", points=5000)
    assert set(payload) == SERIES_KEYS
    assert payload["count"] == STEPS and payload["reduced"] is False
    assert payload["steps"] == list(range(STEPS))
    assert payload["mins"] == payload["values"] == payload["maxs"]
    assert payload["values"][NAN_STEP] is None and payload["values"][INF_STEP] is None
    assert payload["nonfinite"] == [
        {"step": NAN_STEP, "kind": "NaN"},
        {"step": INF_STEP, "kind": "+Inf"},
    ]
    assert all(isinstance(t, float) for t in payload["times"])  # from the _timestamp series
    assert payload["times"] == sorted(payload["times"])


@pytest.mark.parametrize(
    ("start", "end"),
    [(None, None), (0, 2999), (1000, 2600), (1200, 1300), (1990, 2010), (1230, 1240)],
)
def test_spike_nonfinite_and_ends_survive_every_zoom(
    client: TestClient, start: int | None, end: int | None
) -> None:
    params = {"points": 40, **({"start": start, "end": end} if start is not None else {})}
    payload = series(client, "spiky", **params)
    low, high = (0, STEPS - 1) if start is None else (start, end)
    assert payload["start"] == low and payload["end"] == high
    assert payload["count"] == high - low + 1
    assert payload["reduced"] == (payload["count"] > 40)
    steps = payload["steps"]
    assert steps[0] == low and steps[-1] == high and steps == sorted(steps)
    assert len(steps) == len(payload["values"]) == len(payload["mins"]) == len(payload["maxs"])
    if low <= SPIKE_STEP <= high:
        assert payload["values"][steps.index(SPIKE_STEP)] == 100.0
    expected = [(s, k) for s, k in ((NAN_STEP, "NaN"), (INF_STEP, "+Inf")) if low <= s <= high]
    assert [(n["step"], n["kind"]) for n in payload["nonfinite"]] == expected
    for step, _ in expected:
        assert payload["values"][steps.index(step)] is None
    finite = [v for v in payload["values"] if v is not None]
    assert all(
        m is None or m <= v
        for m, v in zip(payload["mins"], payload["values"], strict=True)
        if v is not None
    )
    assert finite


def test_points_are_capped_and_defaulted(client: TestClient) -> None:
    assert len(series(client, "spiky")["steps"]) <= 1000 + 2 + 2
    assert series(client, "spiky", points=10**9)["reduced"] is False  # capped at 20000 > 3000


def test_series_by_wall_time(client: TestClient) -> None:
    full = series(client, "spiky", points=5000)
    times = full["times"]
    payload = series(client, "spiky", x="time", start=times[1000], end=times[1999], points=5000)
    assert payload["x"] == "time" and payload["steps"][0] == 1000 and payload["steps"][-1] == 1999


# -- compare --------------------------------------------------------------------------------------
def test_compare_runs(client: TestClient, store: tuple[Path, dict[str, str]]) -> None:
    ids = store[1]
    response = client.get(
        "/api/compare", params={"runs": "spiky,calm,other", "metric": "loss", "points": 50}
    )
    assert response.status_code == 200, response.text
    payload = strict_json(response.text)
    assert set(payload) == {"metric", "runs", "series", "config_diff", "divergence"}
    assert [row["name"] for row in payload["runs"]] == ["spiky", "calm", "other"]
    assert set(payload["series"]) == {ids["spiky"], ids["calm"], ids["other"]}
    for one in payload["series"].values():
        assert set(one) == SERIES_KEYS and one["steps"][0] == 0 and one["steps"][-1] == STEPS - 1
    spiky = payload["series"][ids["spiky"]]
    assert {n["step"] for n in spiky["nonfinite"]} == {NAN_STEP, INF_STEP}
    assert 100.0 in spiky["values"]
    diff = payload["config_diff"]
    assert diff["lr"] == {ids["spiky"]: 0.1, ids["calm"]: 0.2, ids["other"]: 0.1}
    assert diff["model.depth"] == {ids["spiky"]: 4, ids["calm"]: 4, ids["other"]: None}
    assert "seed" in diff and diff["eps"][ids["other"]] == "NaN"
    divergence = payload["divergence"]
    query = QueryEngine(str(store[0]))
    try:
        expected = {
            rid: query.compare_runs(ids["spiky"], rid, ["loss"])["metrics"]["loss"][
                "first_divergence_step"
            ]
            for rid in (ids["calm"], ids["other"])
        }
    finally:
        query.close()
    assert divergence["reference"] == ids["spiky"] and divergence["runs"] == expected
    assert divergence["step"] == min(s for s in expected.values() if s is not None)
    single = strict_json(client.get("/api/compare?runs=calm&metric=loss").text)
    assert single["divergence"] is None and single["config_diff"] == {}
    assert client.get("/api/compare?runs=calm,nope&metric=loss").status_code == 404


# -- the guard ------------------------------------------------------------------------------------
def test_every_response_carries_the_csp_and_nosniff(client: TestClient) -> None:
    for path in ("/", "/api/runs", "/api/runs/nope", "/static/nope.js", "/elsewhere"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff", path
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP


def test_token_is_required_when_set(store: tuple[Path, dict[str, str]]) -> None:
    with TestClient(create_app(str(store[0]), token="s3cret")) as client:
        refused = client.get("/api/runs")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert refused.headers["content-security-policy"] == CSP
        assert client.get("/api/runs?token=wrong").status_code == 401
        headers = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/runs", headers=headers).status_code == 200
    with TestClient(create_app(str(store[0]), token="s3cret")) as client:
        page = client.get("/?token=s3cret")
        assert page.status_code == 200
        assert "HttpOnly" in page.headers["set-cookie"]  # the page's scripts load with it
        assert client.get("/api/runs").status_code == 200


def test_foreign_host_names_are_refused_when_restricted(
    store: tuple[Path, dict[str, str]],
) -> None:
    app = create_app(str(store[0]), allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://localhost:8765") as client:
        assert client.get("/api/runs").status_code == 200
    with TestClient(app, base_url="http://evil.example") as client:
        assert client.get("/api/runs").status_code == 400


def test_a_store_not_created_yet_reads_as_empty(tmp_path: Path) -> None:
    with TestClient(create_app(str(tmp_path / "later"))) as client:
        assert client.get("/api/runs").json() == {"runs": [], "projects": []}
        assert client.get("/api/runs/x").status_code == 404
    assert not (tmp_path / "later").exists()


def test_nonfinite_values_never_reach_json_as_numbers() -> None:
    from tracer.analysis.encode import dumps

    assert json.loads(dumps({"a": [1.0, math.nan, {"b": math.inf}]})) == {
        "a": [1.0, None, {"b": None}]
    }
