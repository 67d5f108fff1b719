"""Runs as data (`QueryEngine.to_arrow`, `to_pandas`, `to_polars`, `runs_frame`) on real
SQLite stores: every value comes back bit for bit, NaN and +-Inf included, in each library;
the long and wide forms, `time` from the run's `_timestamp` and `rank`; a sweep of 50 runs
grouped by a config column. Skipped where pyarrow is not installed (tox's core-notorch);
pandas and polars tests skip on their own library.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator, Sequence

import pytest

import tracer
from tracer.analysis import QueryEngine
from tracer.config import TracerConfig
from tracer.storage import StorageBackend, open_storage

pa = pytest.importorskip("pyarrow")

NAN, INF = math.nan, math.inf
# Every kind of float64 a history may hold: NaN, both infinities, both zeros, the smallest
# subnormal, the largest finite, and ordinary values.
SPECIAL = [NAN, INF, -INF, -0.0, 0.0, 5e-324, 1.7976931348623157e308, -2.5, 1 / 3]


def bits(values: Sequence[float]) -> list[bytes]:
    return [struct.pack("<d", float(v)) for v in values]


@pytest.fixture
def store() -> Iterator[StorageBackend]:
    backend = open_storage(TracerConfig(project_name="writer"))
    yield backend
    backend.close()


@pytest.fixture
def query() -> Iterator[QueryEngine]:
    engine = QueryEngine(storage_path="./.tracer")
    yield engine
    engine.close()


def make_runs(store: StorageBackend) -> None:
    """Two runs: "alpha" (every special value in `loss`, an `acc` every 4 steps, wall times,
    a rewritten step as a resumed run leaves) and "beta" (rank 1 of a job, a per-rank series)."""
    now = time.time()
    store.create_run("a1", "proj", "alpha", now, {"lr": 0.1})
    steps = list(range(len(SPECIAL)))
    store.write_metrics(
        "a1",
        {
            "loss": (steps, SPECIAL),
            "acc": ([0, 4, 8], [0.1, 0.5, 0.9]),
            "_timestamp": (steps, [1000.0 + s for s in steps]),
        },
    )
    store.write_metrics("a1", {"loss": ([3, 9, 10], [7.0, 11.0, 12.0])})  # steps 3.. again
    store.create_run("b1", "proj", "beta", now + 1, {"lr": 0.2}, rank=1, world_size=2)
    store.write_metrics("b1", {"loss": ([0, 2], [INF, -INF]), "rank/3/grad_norm": ([2], [NAN])})


def expected_loss() -> tuple[list[int], list[float]]:
    values = [*SPECIAL, 11.0, 12.0]
    values[3] = 7.0
    return list(range(len(values))), values


def test_to_arrow_long_form_keeps_every_value_exactly(
    store: StorageBackend, query: QueryEngine
) -> None:
    make_runs(store)
    table = query.to_arrow(["alpha", "b1"])  # names and ids alike
    assert table.column_names == ["run_id", "step", "metric", "value", "time", "rank"]
    assert table.schema.field("value").type == pa.float64()
    rows = table.to_pylist()
    loss = [r for r in rows if (r["run_id"], r["metric"]) == ("a1", "loss")]
    steps, values = expected_loss()
    assert [r["step"] for r in loss] == steps
    assert bits([r["value"] for r in loss]) == bits(values)
    # runs in the order asked, metrics by name, Tracer's own `_timestamp` left out
    order = list(dict.fromkeys((r["run_id"], r["metric"]) for r in rows))
    assert order == [("a1", "acc"), ("a1", "loss"), ("b1", "loss"), ("b1", "rank/3/grad_norm")]
    # time: the wall time stored for that step; null where the run stored none
    assert [r["time"] for r in loss] == [1000.0 + s for s in steps[:-2]] + [None, None]
    acc = [r for r in rows if r["metric"] == "acc"]
    assert [r["time"] for r in acc] == [1000.0, 1004.0, 1008.0]
    assert all(r["time"] is None for r in rows if r["run_id"] == "b1")
    # rank: the run's own rank, or r for a per-rank series
    assert {r["rank"] for r in rows if r["run_id"] == "a1"} == {0}
    assert [(r["metric"], r["rank"]) for r in rows if r["run_id"] == "b1"] == [
        ("loss", 1), ("loss", 1), ("rank/3/grad_norm", 3),
    ]  # fmt: skip


def test_metrics_filter_and_tracer_series_on_request(
    store: StorageBackend, query: QueryEngine
) -> None:
    make_runs(store)
    table = query.to_arrow("alpha", metrics=["acc", "_timestamp"])
    metrics = table.column("metric").to_pylist()
    assert sorted(set(metrics)) == ["_timestamp", "acc"]
    assert query.to_arrow("alpha", metrics=["nothing"]).num_rows == 0


def test_to_pandas_long_and_wide(store: StorageBackend, query: QueryEngine) -> None:
    pytest.importorskip("pandas")
    make_runs(store)
    frame = query.to_pandas(["alpha", "beta"])
    assert list(frame.columns) == ["run_id", "step", "metric", "value", "time", "rank"]
    loss = frame[(frame.run_id == "a1") & (frame.metric == "loss")]
    steps, values = expected_loss()
    assert loss.step.tolist() == steps
    assert bits(loss.value.tolist()) == bits(values)
    wide = query.to_pandas(["alpha", "beta"], wide=True)
    assert list(wide.columns) == ["run_id", "step", "time", "acc", "loss", "rank/3/grad_norm"]
    alpha = wide[wide.run_id == "a1"]
    assert alpha.step.tolist() == steps
    assert bits(alpha.loss.tolist()) == bits(values)
    assert alpha.acc.tolist()[4] == 0.5 and math.isnan(alpha.acc.tolist()[1])
    assert alpha.time.tolist()[:3] == [1000.0, 1001.0, 1002.0]
    beta = wide[wide.run_id == "b1"]
    assert bits(beta.loss.tolist()) == bits([INF, -INF])


def test_to_polars_long_and_wide(store: StorageBackend, query: QueryEngine) -> None:
    polars = pytest.importorskip("polars")
    make_runs(store)
    frame = query.to_polars("alpha")
    loss = frame.filter(polars.col("metric") == "loss")
    steps, values = expected_loss()
    assert loss.get_column("step").to_list() == steps
    assert bits(loss.get_column("value").to_list()) == bits(values)
    wide = query.to_polars(["beta", "alpha"], wide=True)
    assert wide.columns == ["run_id", "step", "time", "acc", "loss", "rank/3/grad_norm"]
    assert wide.get_column("run_id").to_list()[:2] == ["b1", "b1"]  # runs in the order asked
    alpha = wide.filter(polars.col("run_id") == "a1")
    assert alpha.get_column("step").to_list() == steps
    assert bits(alpha.get_column("loss").to_list()) == bits(values)
    assert alpha.get_column("acc").to_list()[1] is None  # a missing point is null, not NaN


def test_a_real_run_has_its_wall_times(query: QueryEngine) -> None:
    """Through the training API: `time` is the wall time the writer stored for each step."""
    before = time.time()
    tracer.init(project="frames", run_name="real", track_system_metrics=False)
    for step in range(50):
        tracer.log({"loss": 1.0 / (step + 1)})
        if step % 10 == 0:
            tracer.log({"eval/acc": step / 50})
        tracer.step()
    tracer.finish()
    table = query.to_arrow("real")
    times = table.column("time").to_pylist()
    assert len(times) == 55 and all(before <= t <= time.time() for t in times)
    loss_times = [
        t for t, m in zip(times, table.column("metric").to_pylist(), strict=True) if m == "loss"
    ]
    assert loss_times == sorted(loss_times)


def sweep(store: StorageBackend) -> None:
    """50 runs: a grid of optimizer x learning rate x seed, the loss ending lower for adam
    and higher for a larger lr; every tenth run failed, one has a NaN and a critical anomaly."""
    now = time.time()
    for n in range(50):
        optimizer = ("adam", "sgd")[n % 2]
        lr = (0.1, 0.01, 0.001, 0.0001, 0.00001)[n % 5]
        config = {"optimizer": {"name": optimizer, "betas": [0.9, 0.99]}, "lr": lr, "seed": n}
        if n == 7:
            config["note"] = "<b>odd</b>"
        run_id = f"run{n:02d}"
        store.create_run(run_id, "sweep", f"sweep-{n}", now + n, config)
        final = (1.0 if optimizer == "adam" else 2.0) + lr * 10
        store.write_metrics(run_id, {"loss": ([0, 1, 2], [5.0, NAN if n == 3 else 3.0, final])})
        store.write_events(run_id, [{"step": 2, "kind": "summary", "data": {"tokens": n * 100}}])
        store.update_run(
            run_id,
            status="failed" if n % 10 == 9 else "finished",
            end_time=now + n + 60,
            total_steps=3,
        )
    store.create_run("other", "elsewhere", "other", now, {"lr": 1.0})
    store.write_anomalies(
        [
            {
                "run_id": "run03", "step": 1, "anomaly_type": "nan_or_inf",
                "severity": "critical", "subject": "loss", "value": NAN, "baseline": 3.0,
                "threshold": 0.0, "message": "NaN", "detector": "nonfinite", "end_step": 1,
                "count": 1, "open": False, "hint": "lower the lr",
            }
        ]
    )  # fmt: skip


def test_runs_frame_groups_a_sweep_by_config(store: StorageBackend, query: QueryEngine) -> None:
    pytest.importorskip("pandas")
    sweep(store)
    runs = query.runs_frame("sweep")
    assert len(runs) == 50 and "other" not in runs.run_id.tolist()
    for column in (
        "status", "duration", "config.optimizer.name", "config.lr", "config.seed",
        "summary.tokens", "final.loss", "best.loss", "anomalies", "anomalies.critical",
    ):  # fmt: skip
        assert column in runs.columns, column
    by_optimizer = runs.groupby("config.optimizer.name")["final.loss"].mean()
    assert by_optimizer["adam"] < by_optimizer["sgd"]
    assert runs.groupby("config.lr").size().tolist() == [10] * 5
    assert (runs.duration == 60).all()
    assert runs[runs.status == "failed"].run_id.tolist() == [
        "run49", "run39", "run29", "run19", "run09",
    ]  # newest first  # fmt: skip
    nan_run = runs[runs.run_id == "run03"].iloc[0]
    assert nan_run["anomalies.critical"] == 1 and nan_run["anomalies"] == 1
    assert runs[runs.run_id == "run07"]["config.note"].tolist() == ["<b>odd</b>"]
    assert runs["config.optimizer.betas"].iloc[0].tolist() == [0.9, 0.99]
    everything = query.runs_frame(as_="arrow")
    assert everything.num_rows == 51 and isinstance(everything, pa.Table)


def test_runs_frame_in_polars(store: StorageBackend, query: QueryEngine) -> None:
    polars = pytest.importorskip("polars")
    sweep(store)
    runs = query.runs_frame("sweep", as_="polars")
    grouped = runs.group_by("config.optimizer.name").agg(polars.col("final.loss").mean())
    means = dict(zip(*grouped.to_dict(as_series=False).values(), strict=True))
    assert means["adam"] < means["sgd"]
    with pytest.raises(ValueError, match="as_ must be one of"):
        query.runs_frame(as_="excel")


def test_mixed_config_types_become_text(store: StorageBackend, query: QueryEngine) -> None:
    """A config key holding an int in one run and a string in another has no Arrow type:
    the column is their JSON text, and nothing is lost."""
    store.create_run("x1", "p", "x1", time.time(), {"size": 3})
    store.create_run("x2", "p", "x2", time.time(), {"size": "large"})
    table = query.runs_frame("p", as_="arrow")
    assert sorted(table.column("config.size").to_pylist()) == ['"large"', "3"]


def test_empty_and_unknown(store: StorageBackend, query: QueryEngine) -> None:
    store.create_run("e1", "p", "empty", time.time(), {})
    assert query.to_arrow("empty").num_rows == 0
    from tracer.exceptions import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        query.to_arrow(["empty", "no-such-run"])
