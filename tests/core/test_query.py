"""`QueryEngine` (and the run naming it shares with `AnomalyDetector`) against real storage.

Runs are made either through the public training API (`tracer.init/log/step/finish`,
`record_model_save`), when what matters is what a real run leaves behind, or straight through
`StorageBackend`, when a test needs exact control (a dead pid, chosen checkpoints and
anomalies). The last test reads a run while another process is still writing it.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.analysis.comparison import first_divergence_between
from tracer.config import TracerConfig
from tracer.exceptions import RunNotFoundError
from tracer.records import AnomalyWrite
from tracer.storage import StorageBackend, open_storage
from tracer.storage.liveness import this_host

NAN, INF = math.nan, math.inf


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture
def store() -> Iterator[StorageBackend]:
    """A writer on the default location, ./.tracer (a fresh cwd per test)."""
    backend = open_storage(TracerConfig(project_name="writer"))  # = StorageBackend(config)
    yield backend
    backend.close()


@pytest.fixture
def query() -> Iterator[QueryEngine]:
    engine = QueryEngine(storage_path="./.tracer")
    yield engine
    engine.close()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_run(
    store: StorageBackend,
    run_id: str,
    name: Optional[str] = None,
    project: str = "p",
    metrics: Optional[dict[str, Sequence[float]]] = None,
    steps: Optional[Sequence[int]] = None,
    **kwargs: Any,
) -> None:
    """A run created straight in storage, with `metrics` at `steps` (default 0..n-1)."""
    store.create_run(
        run_id, project, name or run_id, kwargs.pop("start_time", time.time()), {}, **kwargs
    )
    for metric, values in (metrics or {}).items():
        at = list(steps) if steps is not None else list(range(len(values)))
        store.write_metrics(run_id, {metric: (at, list(values))})


def anomaly(
    run_id: str, step: int, anomaly_type: str = "loss_spike", severity: str = "warning"
) -> AnomalyWrite:
    return {
        "run_id": run_id,
        "step": step,
        "anomaly_type": anomaly_type,
        "severity": severity,
        "subject": "loss",
        "value": 9.0,
        "baseline": 1.0,
        "threshold": 8.0,
        "message": f"{anomaly_type} at {step}",
        "detector": "test",
    }


def train(
    name: str,
    losses: Sequence[float],
    project: str = "p",
    saves: Sequence[int] = (),
    **kwargs: Any,
) -> str:
    """A finished run through the public API: loss and accuracy each step, a model save
    recorded at each step in `saves`; returns the run id."""
    run = tracer.init(project=project, run_name=name, track_system_metrics=False, **kwargs)
    for i, loss in enumerate(losses):
        tracer.log({"loss": loss, "accuracy": 0.5 + i / (2 * len(losses))})
        if i in saves:
            tracer.record_model_save(f"ckpt-{i}.pt")
        tracer.step()
    tracer.finish()
    return run.run_id


# -- naming runs ------------------------------------------------------------------------------
def test_runs_resolve_by_id_and_by_name(store: StorageBackend, query: QueryEngine) -> None:
    """An id and a name reach the same run; an id wins over another run's equal name."""
    make_run(store, "id-1", "alpha", metrics={"loss": [1.0, 0.5]})
    make_run(store, "shared", "beta")
    make_run(store, "id-3", "shared")
    assert query.resolve_run("id-1")["run_name"] == "alpha"
    assert query.resolve_run("alpha")["run_id"] == "id-1"
    assert query.resolve_run("shared")["run_id"] == "shared"
    assert query.get_run_summary("alpha")["run_id"] == "id-1"
    assert query.get_metric_history("alpha", "loss") == query.get_metric_history("id-1", "loss")


def test_ambiguous_name_raises_listing_every_match(
    store: StorageBackend, query: QueryEngine
) -> None:
    """A name used in two projects is refused everywhere a run is named, and the message
    lists both runs with their projects so the user can pick an id."""
    make_run(store, "id-a", "same", project="p")
    make_run(store, "id-b", "same", project="q")
    calls: list[Callable[[], object]] = [
        lambda: query.resolve_run("same"),
        lambda: query.get_run_summary("same"),
        lambda: query.compare_runs("same", "id-a", ["loss"]),
        lambda: query.find_anomalous_checkpoints("same"),
        lambda: AnomalyDetector(store).detect_all_anomalies("same"),
    ]
    for call in calls:
        with pytest.raises(RunNotFoundError, match="ambiguous") as raised:
            call()
        message = str(raised.value)
        assert "id-a in 'p'" in message and "id-b in 'q'" in message
    assert query.resolve_run("id-b")["project_name"] == "q"  # ids still work


def test_unknown_run_lists_near_matches(store: StorageBackend, query: QueryEngine) -> None:
    """An unknown id or name raises RunNotFoundError (a LookupError) naming near matches;
    with nothing close, it names none."""
    make_run(store, "a1b2c3", "baseline-lr3")
    make_run(store, "d4e5f6", "baseline-lr4")
    with pytest.raises(RunNotFoundError, match="near matches") as raised:
        query.get_run_summary("baseline-lr5")
    assert "baseline-lr3" in str(raised.value) and "baseline-lr4" in str(raised.value)
    with pytest.raises(LookupError) as raised_lookup:
        query.resolve_run("zzzzzzzzzzzz")
    assert "near matches" not in str(raised_lookup.value)
    with pytest.raises(RunNotFoundError, match="a1b2c3"):
        AnomalyDetector(store).detect_nan_inf("a1b2c4")


# -- summaries --------------------------------------------------------------------------------
def test_summary_of_a_finished_run(query: QueryEngine) -> None:
    """Every summary field, for a run recorded through the public API with a NaN loss that
    online detection turned into an anomaly (and an anomaly checkpoint)."""
    losses = [2.0, 1.5, 1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.9, 1.2, 1.0, 0.95, NAN, 0.9, 0.85]
    run_id = train(
        "summary", losses, config={"lr": 0.1}, tags=["x", "y"], notes="n", checkpoint_interval=5
    )
    summary = query.get_run_summary("summary")
    assert summary["run_id"] == run_id and summary["run_name"] == "summary"
    assert summary["project_name"] == "p"
    assert (summary["status"], summary["error"]) == ("finished", None)
    assert summary["total_steps"] == len(losses)
    assert summary["end_time"] is not None
    assert summary["duration"] == summary["end_time"] - summary["start_time"] >= 0
    assert summary["final_metrics"] == {"loss": 0.85, "accuracy": 0.5 + 14 / 30}
    assert summary["best_metrics"] == {"loss": 0.4, "accuracy": 0.5 + 14 / 30}
    assert summary["anomaly_counts"] == {"nan_or_inf": 1}
    assert summary["anomalies"] == 1
    first = summary["first_anomaly"]
    assert (first["step"], first["anomaly_type"], first["severity"]) == (
        12,
        "nan_or_inf",
        "critical",
    )
    assert first["details"]["subject"] == "loss" and first["checkpoint_step"] == 12
    assert summary["checkpoints"] == 4  # interval 5 and 10, anomaly 12, finish 14
    assert summary["config"] == {"lr": 0.1}
    assert summary["tags"] == ["x", "y"] and summary["notes"] == "n"


def test_summary_best_metrics_min_for_loss_like_max_otherwise(
    store: StorageBackend, query: QueryEngine
) -> None:
    """ "Best" is the minimum for loss, error and perplexity, the maximum for accuracy-like
    metrics (accuracy, f1, ...), and there is none for the rest (a gradient norm, an lr,
    Tracer's grad/ and system/ series); NaN is never best."""
    values = [3.0, 1.0, NAN, 2.0]
    names = ["loss", "val_loss", "error_rate", "perplexity", "grad/global_norm", "accuracy"]
    others = {"f1": values, "_timestamp": values, "lr": values, "epoch": values}
    make_run(store, "r", metrics={**{n: values for n in names}, **others})
    summary = query.get_run_summary("r")
    assert summary["best_metrics"] == {
        "loss": 1.0,
        "val_loss": 1.0,
        "error_rate": 1.0,
        "perplexity": 1.0,
        "accuracy": 3.0,
        "f1": 3.0,
    }  # no best for grad/global_norm, lr, epoch; "_" series (Tracer's own) are left out
    assert summary["final_metrics"]["loss"] == 2.0
    assert (summary["anomaly_counts"], summary["first_anomaly"]) == ({}, None)


def test_summary_of_a_run_whose_process_died_reads_crashed(
    store: StorageBackend, query: QueryEngine
) -> None:
    """A run left "running" by a process that is gone reads "crashed"; its duration runs to
    the last heartbeat."""
    start = time.time() - 100.0
    make_run(
        store,
        "dead",
        metrics={"loss": [1.0, 0.5, 0.25]},
        start_time=start,
        host=this_host(),
        pid=dead_pid(),
        heartbeat_interval=10.0,
    )
    store.update_run("dead", heartbeat=start + 42.0, total_steps=3)
    summary = query.get_run_summary("dead")
    assert summary["status"] == "crashed"
    assert summary["end_time"] is None
    assert summary["duration"] == pytest.approx(42.0)
    assert summary["total_steps"] == 3 and summary["final_metrics"] == {"loss": 0.25}


def test_summary_of_a_live_run_reads_running_with_duration_so_far(
    store: StorageBackend, query: QueryEngine
) -> None:
    """A run whose process is alive reads "running", with no end time and a duration that
    runs to now."""
    start = time.time() - 5.0
    make_run(store, "live", start_time=start, host=this_host(), pid=os.getpid())
    summary = query.get_run_summary("live")
    assert summary["status"] == "running" and summary["end_time"] is None
    assert summary["duration"] >= 5.0
    assert summary["final_metrics"] == {} and summary["total_steps"] == 0


# -- compare_runs -----------------------------------------------------------------------------
def test_compare_runs_statistics_and_delta(store: StorageBackend, query: QueryEngine) -> None:
    """Per run: final (the last value, NaN included), min, max and mean of the finite values,
    count of all points; delta = final of run2 - final of run1. A metric one run lacks has
    count 0 and NaN figures there."""
    make_run(store, "a", metrics={"loss": [4.0, 3.0, NAN, 1.0, 2.0], "only_a": [1.0]})
    make_run(store, "b", metrics={"loss": [4.0, 3.0, 2.5, 1.5, 1.0]})
    result = query.compare_runs("a", "b", ["loss", "only_a"])
    assert (result["run1"], result["run2"]) == ("a", "b")
    loss = result["metrics"]["loss"]
    assert loss["run1"] == {"final": 2.0, "min": 1.0, "max": 4.0, "mean": 2.5, "count": 5}
    assert loss["run2"] == {"final": 1.0, "min": 1.0, "max": 4.0, "mean": 2.4, "count": 5}
    assert loss["delta"] == -1.0
    assert loss["first_divergence_step"] == 2  # NaN against 2.5
    missing = result["metrics"]["only_a"]
    assert missing["run2"]["count"] == 0 and math.isnan(missing["run2"]["final"])
    assert math.isnan(missing["delta"]) and missing["first_divergence_step"] is None


def test_compare_runs_all_non_finite_history(store: StorageBackend, query: QueryEngine) -> None:
    """A history with no finite value: final is its last value, min/max/mean are NaN, and
    matching non-finite histories do not diverge."""
    make_run(store, "a", metrics={"loss": [NAN, INF]})
    make_run(store, "b", metrics={"loss": [NAN, INF]})
    stats = query.compare_runs("a", "b", ["loss"])["metrics"]["loss"]
    assert stats["run1"]["final"] == INF and stats["run1"]["count"] == 2
    assert all(math.isnan(stats["run1"][k]) for k in ("min", "max", "mean"))
    assert stats["first_divergence_step"] is None


def test_identical_runs_never_diverge(store: StorageBackend, query: QueryEngine) -> None:
    """Same values at the same steps, NaN and infinities at the same places included."""
    rng = random.Random(1)
    values = [rng.uniform(-5, 5) for _ in range(2000)]
    values[10], values[500], values[501], values[1999] = NAN, INF, -INF, 0.0
    make_run(store, "a", metrics={"loss": values})
    make_run(store, "b", metrics={"loss": list(values)})
    assert (
        query.compare_runs("a", "b", ["loss"])["metrics"]["loss"]["first_divergence_step"] is None
    )


@pytest.mark.parametrize("k", [0, 1, 777, 1999])
def test_first_divergence_is_the_first_step_beyond_tolerance(
    store: StorageBackend, query: QueryEngine, k: int
) -> None:
    """Differences within 5% (relative) never count; the first step that differs by more
    than 5% is reported, whatever follows it."""
    base = [1.0 + i * 0.01 for i in range(2000)]
    other = [v * 1.03 if i % 3 == 0 else v for i, v in enumerate(base)]  # within 5%
    other[k] = base[k] * 1.06
    make_run(store, "a", metrics={"loss": base})
    make_run(store, "b", metrics={"loss": other})
    comparison = query.compare_runs("a", "b", ["loss"])
    assert comparison["metrics"]["loss"]["first_divergence_step"] == k
    assert query.compare_runs("b", "a", ["loss"])["metrics"]["loss"]["first_divergence_step"] == k
    strict = query.compare_runs("a", "b", ["loss"], tolerance=0.01)["metrics"]["loss"]
    assert strict["first_divergence_step"] == 0  # the 3% at step 0 counts now


def test_nan_on_both_sides_agrees_on_one_side_diverges(
    store: StorageBackend, query: QueryEngine
) -> None:
    """NaN at the same step of both runs is agreement; NaN in only one run is a divergence at
    that step. Equal infinities agree; an infinity against a finite value diverges."""
    make_run(store, "a", metrics={"loss": [1.0, NAN, NAN, 2.0, 3.0, INF, 5.0]})
    make_run(store, "b", metrics={"loss": [1.0, NAN, NAN, 2.0, NAN, INF, 5.0]})
    make_run(store, "c", metrics={"loss": [1.0, NAN, NAN, 2.0, 3.0, 1e300, 5.0]})
    assert query.compare_runs("a", "b", ["loss"])["metrics"]["loss"]["first_divergence_step"] == 4
    # Equal infinities agree; an infinity against a finite value diverges.
    assert query.compare_runs("a", "c", ["loss"])["metrics"]["loss"]["first_divergence_step"] == 5


def test_divergence_over_different_step_sets_uses_common_steps(
    store: StorageBackend, query: QueryEngine
) -> None:
    """Runs logged at different steps are compared where both have a value; each run's
    statistics still cover all of its own points."""
    a_steps = list(range(100))
    b_steps = list(range(0, 200, 2))
    a_values = [1.0] * 100
    a_values[51] = 100.0  # an odd step: run b has none, so it is not a divergence
    b_values = [1.0] * 100
    b_values[30] = 2.0  # step 60
    make_run(store, "a", metrics={"loss": a_values}, steps=a_steps)
    make_run(store, "b", metrics={"loss": b_values}, steps=b_steps)
    loss = query.compare_runs("a", "b", ["loss"])["metrics"]["loss"]
    assert loss["first_divergence_step"] == 60
    assert (loss["run1"]["count"], loss["run2"]["count"]) == (100, 100)
    assert (loss["run1"]["max"], loss["run2"]["max"]) == (100.0, 2.0)
    disjoint = {"steps": [1, 3], "values": [1.0, 2.0]}
    assert first_divergence_between({"steps": [0, 2], "values": [5.0, 6.0]}, disjoint, 0.05) is None


def _reference_differs(mine: float, theirs: float, tolerance: float) -> bool:
    """The rule, spelled out: NaN agrees with NaN only; equal values agree; an infinity
    differs from anything else; otherwise relative to the larger magnitude."""
    if math.isnan(mine) or math.isnan(theirs):
        return not (math.isnan(mine) and math.isnan(theirs))
    if mine == theirs:
        return False
    if math.isinf(mine) or math.isinf(theirs):
        return True
    return abs(mine - theirs) > tolerance * max(abs(mine), abs(theirs), 1e-12)


def test_first_divergence_matches_the_plain_rule_on_random_histories() -> None:
    """The fast scan (C-level passes, then an exact check of flagged pairs) finds the same
    step as checking every pair with the plain rule, over histories mixing tiny and huge
    magnitudes, zeros of both signs, NaN, infinities and differences at the boundary."""
    rng = random.Random(7)
    specials = [0.0, -0.0, NAN, INF, -INF, 5e-324, 1e-13, -1e-13, 1.7976931348623157e308]
    for case in range(400):
        size = rng.randint(1, 60)
        tolerance = rng.choice([0.0, 0.01, 0.05, 0.5])
        mine = [
            rng.choice(specials)
            if rng.random() < 0.1
            else rng.uniform(-1, 1) * 10 ** rng.randint(-14, 14)
            for _ in range(size)
        ]
        theirs = list(mine)
        for _ in range(rng.randint(0, 4)):
            i = rng.randrange(size)
            kind = rng.random()
            if kind < 0.3:
                theirs[i] = mine[i] * (1 + rng.choice([-1, 1]) * tolerance * rng.uniform(0.5, 1.5))
            elif kind < 0.5:
                theirs[i] = mine[i] * (1 + tolerance)  # on the boundary
            elif kind < 0.7:
                theirs[i] = rng.choice(specials)
            else:
                theirs[i] = rng.uniform(-1, 1) * 10 ** rng.randint(-14, 14)
        steps = list(range(0, 3 * size, 3))
        expected = next(
            (
                s
                for s, a, b in zip(steps, mine, theirs, strict=True)
                if _reference_differs(a, b, tolerance)
            ),
            None,
        )
        found = first_divergence_between(
            {"steps": steps, "values": mine}, {"steps": steps, "values": theirs}, tolerance
        )
        assert found == expected, (case, tolerance, mine, theirs)


def test_negative_tolerance_is_refused(store: StorageBackend, query: QueryEngine) -> None:
    """A negative tolerance is a caller error (ValueError), not a silent "all differ"."""
    make_run(store, "a")
    with pytest.raises(ValueError, match="tolerance"):
        query.compare_runs("a", "a", ["loss"], tolerance=-0.1)


# -- anomalies and checkpoints ----------------------------------------------------------------
def test_find_anomalous_checkpoints_groups_by_nearest_and_filters_types(
    store: StorageBackend, query: QueryEngine
) -> None:
    """Each anomaly is linked to its nearest checkpoint (the later one on a tie); only
    checkpoints with linked anomalies of the asked types are listed, in step order."""
    make_run(store, "r", metrics={"loss": [1.0] * 40})
    for step in (10, 20, 30):
        store.write_checkpoint("r", step, float(step), {"loss": 1.0}, {}, {})
    store.write_anomalies(
        [
            anomaly("r", 12, "nan_or_inf", "critical"),
            anomaly("r", 15, "loss_spike"),  # as near 10 as 20: goes to 20
            anomaly("r", 18, "gradient_explosion", "critical"),
            anomaly("r", 29, "loss_spike"),
        ]
    )
    chosen = query.find_anomalous_checkpoints("r", ["gradient_explosion", "nan_or_inf"])
    assert [(c["step"], [a["step"] for a in c["anomalies"]]) for c in chosen] == [
        (10, [12]),
        (20, [18]),
    ]
    assert chosen[0]["metrics"] == {"loss": 1.0} and chosen[0]["reason"] == "interval"
    linked = chosen[0]["anomalies"][0]
    assert linked["checkpoint_step"] == 10 and linked["details"]["message"] == "nan_or_inf at 12"
    every = query.find_anomalous_checkpoints("r")
    assert [(c["step"], [a["step"] for a in c["anomalies"]]) for c in every] == [
        (10, [12]),
        (20, [15, 18]),
        (30, [29]),
    ]
    assert query.find_anomalous_checkpoints("r", ["memory_leak"]) == []


def test_find_anomalous_checkpoints_prefers_the_anomaly_checkpoint_and_needs_one(
    store: StorageBackend, query: QueryEngine
) -> None:
    """Of two checkpoints at one step, the one an anomaly triggered is listed; a run without
    checkpoints has no anomalous checkpoint (its anomalies link to none)."""
    make_run(store, "r")
    make_run(store, "bare")
    store.write_checkpoint("r", 20, 1.0, {"loss": 1.0}, {}, {})
    store.write_checkpoint("r", 20, 2.0, {"loss": NAN}, {}, {}, reason="anomaly")
    store.write_anomalies([anomaly("r", 20, "nan_or_inf"), anomaly("bare", 3)])
    (checkpoint,) = query.find_anomalous_checkpoints("r")
    assert checkpoint["reason"] == "anomaly" and math.isnan(checkpoint["metrics"]["loss"])
    assert query.find_anomalous_checkpoints("bare") == []  # no checkpoint to link to
    assert query.get_anomalies("bare")[0]["checkpoint_step"] is None


def test_last_healthy_checkpoint_is_the_last_save_before_the_first_anomaly(
    query: QueryEngine,
) -> None:
    """Model saves recorded at 10, 20, 25 and 30 with a NaN loss (an online anomaly) at 25:
    the save at 20 is the last healthy one; the one at the anomaly's step is not."""
    losses = [NAN if i == 25 else 1.0 / (i + 1) for i in range(40)]
    train("sick", losses, saves=(10, 20, 25, 30))
    assert query.last_healthy_checkpoint("sick") == {
        "step": 20,
        "path": "ckpt-20.pt",
        "pinned_path": None,
    }


def test_last_healthy_checkpoint_without_anomaly_saves_or_serious_anomaly(
    store: StorageBackend, query: QueryEngine
) -> None:
    """No anomaly: the last save. No save: None. Info-level anomalies do not make a save
    unhealthy; a warning before every save leaves none."""
    healthy_id = train("healthy", [1.0 / (i + 1) for i in range(40)], saves=(10, 20, 30))
    assert query.last_healthy_checkpoint("healthy") == {
        "step": 30,
        "path": "ckpt-30.pt",
        "pinned_path": None,
    }
    train("unsaved", [1.0] * 5)
    assert query.last_healthy_checkpoint("unsaved") is None
    store.write_anomalies([anomaly(healthy_id, 5, "loss_plateau", "info")])
    assert query.last_healthy_checkpoint("healthy") == {
        "step": 30,
        "path": "ckpt-30.pt",
        "pinned_path": None,
    }
    store.write_anomalies([anomaly(healthy_id, 25, "loss_spike", "warning")])
    assert query.last_healthy_checkpoint("healthy") == {
        "step": 20,
        "path": "ckpt-20.pt",
        "pinned_path": None,
    }
    store.write_anomalies([anomaly(healthy_id, 5, "loss_spike", "critical")])
    assert query.last_healthy_checkpoint("healthy") is None


def test_record_model_save_at_an_explicit_step(query: QueryEngine) -> None:
    """`record_model_save(path, step=...)` records the save at that step, not the current one."""
    run = tracer.init(project="p", run_name="explicit", track_system_metrics=False)
    tracer.log({"loss": 1.0})
    tracer.record_model_save("/models/best.pt", step=7)
    tracer.step()
    run.finish()
    assert query.last_healthy_checkpoint("explicit") == {
        "step": 7,
        "path": "/models/best.pt",
        "pinned_path": None,
    }


def test_store_anomalies_twice_stores_once(store: StorageBackend, query: QueryEngine) -> None:
    """Offline detection of a run already judged online finds what online detection stored,
    so storing it adds nothing; storing the same list twice adds nothing either. Two NaNs 23
    steps apart are one episode (7 to 30, count 2); one 60 steps later is another."""
    run_id = train("nan", [NAN if i in (7, 30, 90) else 1.0 for i in range(100)])
    online = store.get_anomalies(run_id, ["nan_or_inf"])  # (a flat loss: an info plateau too)
    episodes = [(7, 30, 2, "nan_or_inf"), (90, 90, 1, "nan_or_inf")]
    assert [(a["step"], a["end_step"], a["count"], a["anomaly_type"]) for a in online] == episodes
    assert not any(a["open"] for a in online)  # the run ended
    detector = AnomalyDetector(store)
    found = detector.detect_all_anomalies("nan")
    nan_found = [a for a in found if a["anomaly_type"] == "nan_or_inf"]
    found_episodes = [(a["step"], a["end_step"], a["count"], a["anomaly_type"]) for a in nan_found]
    assert found_episodes == episodes
    assert detector.store_anomalies(found) == 0
    store.delete_run(run_id)  # nothing stored: the first store stores all
    make_run(store, "fresh", metrics={"loss": [1.0, NAN, 1.0]})
    found = detector.detect_nan_inf("fresh")
    assert detector.store_anomalies(found) == 1
    assert detector.store_anomalies(found) == 0
    assert len(query.get_anomalies("fresh")) == 1
    assert query.get_run_summary("fresh")["anomaly_counts"] == {"nan_or_inf": 1}


# -- listing and history ----------------------------------------------------------------------
def test_list_runs_filters_by_project_status_and_tag(
    store: StorageBackend, query: QueryEngine
) -> None:
    """Project, effective status (a dead process reads "crashed") and tag filters, alone and
    together, newest run first."""
    make_run(store, "p-done", project="p", tags=["a"], start_time=1.0)
    make_run(store, "p-dead", project="p", tags=["b"], start_time=2.0)
    make_run(store, "q-live", project="q", tags=["a", "b"], host=this_host(), pid=os.getpid())
    store.update_run("p-done", status="finished")
    store.update_run("p-dead", pid=dead_pid(), host=this_host())

    def ids(runs: Sequence[Any]) -> list[str]:
        return [r["run_id"] for r in runs]

    assert ids(query.list_runs()) == ["q-live", "p-dead", "p-done"]
    assert ids(query.list_runs("p")) == ["p-dead", "p-done"]
    assert ids(query.list_runs(status="crashed")) == ["p-dead"]
    assert ids(query.list_runs(status="running")) == ["q-live"]
    assert ids(query.list_runs(tag="a")) == ["q-live", "p-done"]
    assert ids(query.list_runs("p", status="finished", tag="a")) == ["p-done"]
    assert ids(query.list_runs("p", tag="zzz")) == []
    assert ids(query.list_runs("nope")) == []


def test_get_metric_history(store: StorageBackend, query: QueryEngine) -> None:
    """The whole history of one metric as plain lists, by run id or name; NaN kept; an
    unknown metric is empty, an unknown run raises."""
    make_run(store, "r", "named", metrics={"loss": [3.0, NAN, 1.0]}, steps=[0, 5, 10])
    history = query.get_metric_history("named", "loss")
    assert history["steps"] == [0, 5, 10]
    assert history["values"][0] == 3.0 and math.isnan(history["values"][1])
    assert query.get_metric_history("r", "missing") == {"steps": [], "values": []}
    with pytest.raises(RunNotFoundError):
        query.get_metric_history("nope", "loss")


# -- reading while another process writes -----------------------------------------------------
WRITER = """
    import itertools, sys, time
    import tracer

    tracer.init(project="live", run_name="live", storage_path=sys.argv[1],
                flush_interval=0.05, heartbeat_interval=1.0, track_system_metrics=False)
    for i in itertools.count():
        tracer.log({"loss": 1.0 / (i + 1), "accuracy": i * 1e-6})
        tracer.step()
        time.sleep(0.002)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_queries_while_another_process_writes(tmp_path: Path) -> None:
    """A child process logs steadily (flushing every 50 ms). Queries made meanwhile see the
    run "running", a history that only grows and stays in step order, and a summary whose
    step count grows; after SIGTERM the run reads "killed"."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    storage_path = tmp_path / "shared-store"
    env = {k: v for k, v in os.environ.items() if k not in ("TRACER_MODE", "TRACER_STORAGE_PATH")}
    child = subprocess.Popen(
        [sys.executable, str(script), str(storage_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        _watch_live_run(child, storage_path)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        with QueryEngine(storage_path=str(storage_path)) as query:
            summary = query.get_run_summary("live")
            history = query.get_metric_history("live", "loss")
        assert summary["status"] == "killed", summary
        assert summary["end_time"] is not None
        assert history["steps"] == list(range(len(history["steps"])))
        assert summary["total_steps"] >= len(history["steps"]) > 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr is not None:
            child.stderr.close()


def _wait_for(condition: Callable[[], bool], child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60.0
    while not condition():
        if child.poll() is not None:
            stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
            pytest.fail(f"writer exited ({child.returncode}) before {what}:\n{stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _watch_live_run(child: subprocess.Popen[bytes], storage_path: Path) -> None:
    def has_points() -> bool:
        if not (storage_path / "tracer.db").exists():
            return False
        with QueryEngine(storage_path=str(storage_path)) as probe:
            runs = probe.list_runs("live")
            return bool(runs) and bool(probe.get_metric_history("live", "loss")["steps"])

    _wait_for(has_points, child, "the first committed points")
    with QueryEngine(storage_path=str(storage_path)) as query:
        lengths: list[int] = []
        totals: list[int] = []

        def observe() -> bool:
            summary = query.get_run_summary("live")
            history = query.get_metric_history("live", "loss")
            assert summary["status"] == "running", summary
            assert summary["end_time"] is None
            steps = history["steps"]
            assert steps == list(range(len(steps)))  # committed flushes only, in order
            assert history["values"] == [1.0 / (i + 1) for i in steps]
            assert set(summary["final_metrics"]) == {"loss", "accuracy"}
            lengths.append(len(steps))
            totals.append(summary["total_steps"])
            return len(lengths) >= 5 and lengths[-1] > lengths[0] and totals[-1] > totals[0]

        _wait_for(observe, child, "the history and the step count to grow")
        assert lengths == sorted(lengths) and totals == sorted(totals)
