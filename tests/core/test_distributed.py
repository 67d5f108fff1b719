"""The plain API under torchrun (two CPU processes, gloo): one run per job, written by rank 0;
every rank's gradient summary in it; FSDP's sharded gradients give the global norm; tracing
on rank 0 only neither hangs nor slows the job's end; every rank's weight fingerprint, equal
in healthy DDP, apart (and reported) when the forward bypasses the DDP wrapper."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("torch.distributed")

from tests.core.distributed_training import reference_norms  # noqa: E402
from tests.torchrun import run_torchrun  # noqa: E402
from tracer.analysis import AnomalyDetector, QueryEngine  # noqa: E402
from tracer.capture.gradients.ranks import FINISH_WAIT_S  # noqa: E402
from tracer.storage import open_storage  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (distributed.is_available() and distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available in this torch build",
    ),
]

SCRIPT = Path(__file__).with_name("distributed_training.py")
STEPS = 5
REPLICA_STEPS = 55  # fingerprints at steps 0 and 50 (rank_weight_check_interval=50)
TIMEOUT_S = 180.0


def launch(cwd: Path, mode: str, steps: int = STEPS) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    run_torchrun(SCRIPT, [mode, steps], cwd, timeout=TIMEOUT_S)
    elapsed = time.monotonic() - started
    reports = [json.loads((cwd / f"rank-{r}.json").read_text()) for r in (0, 1)]
    return reports, elapsed


def stored(cwd: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[Any]]]]:
    with QueryEngine(str(cwd / ".tracer")) as query:
        runs = query.list_runs()
        assert len(runs) == 1, runs
        names = [m["name"] for m in query.storage.list_metrics(runs[0]["run_id"])]
        return runs[0], {n: query.get_metric_history(runs[0]["run_id"], n) for n in names}


def anomalies(cwd: Path, kind: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's stored anomalies of `kind` (found online), and those an offline replay finds."""
    with QueryEngine(str(cwd / ".tracer")) as query:
        run_id = query.list_runs()[0]["run_id"]
        online = [a for a in query.get_anomalies(run_id) if a["anomaly_type"] == kind]
    store = open_storage(str(cwd / ".tracer"))
    try:
        replayed = AnomalyDetector(store).detect_all_anomalies(run_id)
    finally:
        store.close()
    return online, [a for a in replayed if a["anomaly_type"] == kind]


def reference() -> list[float]:
    return reference_norms(STEPS)


def test_ddp_every_rank_traces_one_run(tmp_path: Path) -> None:
    reports, _ = launch(tmp_path, "ddp")
    assert reports[0]["is_writer"] and not reports[1]["is_writer"]
    assert reports[1]["run_id"] == ""  # a follower holds no run of its own
    run, history = stored(tmp_path)
    assert run["run_id"] == reports[0]["run_id"]
    assert (run["status"], run["world_size"], run["total_steps"]) == ("finished", 2, STEPS)
    steps = list(range(STEPS))
    assert history["loss"]["steps"] == steps  # rank 1's log() calls wrote nothing
    assert history["grad/global_norm"]["values"] == pytest.approx(reference(), rel=1e-5)
    for rank in (0, 1):
        assert history[f"rank/{rank}/grad_norm"]["steps"] == steps
    assert history["rank/0/grad_norm"]["values"] != history["rank/1/grad_norm"]["values"]
    # The starting weights' fingerprint (step 0), the same on both ranks (DDP broadcast them).
    assert history["rank/0/weight_fingerprint"]["steps"] == [0]
    assert history["rank/0/weight_fingerprint"] == history["rank/1/weight_fingerprint"]


def test_ddp_replicas_hold_the_same_weights(tmp_path: Path) -> None:
    """Healthy DDP: the ranks' weights are bitwise equal at every check, nothing reported."""
    launch(tmp_path, "ddp", steps=REPLICA_STEPS)
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    fingerprints = [history[f"rank/{rank}/weight_fingerprint"] for rank in (0, 1)]
    assert fingerprints[0]["steps"] == [0, 50]
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0]["values"][0] != fingerprints[0]["values"][1]  # the weights moved
    online, offline = anomalies(tmp_path, "replica_divergence")
    assert online == offline == []


def test_forward_bypassing_ddp_is_reported_critical(tmp_path: Path) -> None:
    """`trained.module(x)`: no all-reduce, each rank trains on its own half-batches. Equal at
    the first check (step 0), apart at the next (step 50): one critical episode, online and
    offline alike, saying what to try."""
    launch(tmp_path, "bypass", steps=REPLICA_STEPS)
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    zero, one = (history[f"rank/{rank}/weight_fingerprint"]["values"] for rank in (0, 1))
    assert zero[0] == one[0] and zero[1] != one[1]
    online, offline = anomalies(tmp_path, "replica_divergence")
    assert [(a["step"], a["severity"], a["subject"]) for a in online] == [
        (50, "critical", "weight_fingerprint")
    ]
    assert "the weights of ranks 0 and 1 differ at step 50" in online[0]["message"]
    assert "ddp_model(x), not ddp_model.module(x)" in online[0]["hint"]
    keys = ("step", "end_step", "severity", "subject", "message", "hint")
    assert [{k: a[k] for k in keys} for a in offline] == [{k: a[k] for k in keys} for a in online]


def test_ranks_holding_other_parameters_are_not_compared(tmp_path: Path) -> None:
    """Rank 1 trains a wider model (as a pipeline stage holds other parameters than rank 0):
    its fingerprints are left out, so no divergence is reported for what is no replica."""
    launch(tmp_path, "stages", steps=REPLICA_STEPS)
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    assert history["rank/0/weight_fingerprint"]["steps"] == [0, 50]
    assert "rank/1/weight_fingerprint" not in history
    assert history["rank/1/grad_norm"]["steps"] == list(range(REPLICA_STEPS))
    online, offline = anomalies(tmp_path, "replica_divergence")
    assert online == offline == []


def test_fsdp_sharded_gradients_give_the_global_norm(tmp_path: Path) -> None:
    """fully_shard leaves each rank half of every parameter: the stored norm is still the
    whole gradient's (sum of squares all-reduced), equal to one process's reference."""
    launch(tmp_path, "fsdp")
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    assert history["grad/global_norm"]["values"] == pytest.approx(reference(), rel=1e-5)
    assert history["rank/1/grad_norm"]["values"] == pytest.approx(reference(), rel=1e-5)
    # Every parameter is a DTensor shard: the shards differ on purpose, nothing is compared.
    assert not any(name.endswith("weight_fingerprint") for name in history)


def test_only_rank_zero_traces_without_waiting(tmp_path: Path) -> None:
    reports, elapsed = launch(tmp_path, "rank0")
    assert [r["traced"] for r in reports] == [True, False]
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    assert history["rank/0/grad_norm"]["steps"] == list(range(STEPS))
    assert "rank/1/grad_norm" not in history
    assert elapsed < FINISH_WAIT_S + 30  # the end did not wait for a rank that never traced


def test_halt_on_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """NaN in rank 0's batch of step 10: rank 0 finds nan_or_inf and publishes a stop step;
    both ranks raise TrainingHalted there (neither is left waiting in an all-reduce)."""
    reports, _ = launch(tmp_path, "halt", steps=200)
    stops = [r["halted_at"] for r in reports]
    assert stops[0] is not None and stops[0] == stops[1], stops
    assert 10 < stops[0] < 100
    run, _ = stored(tmp_path)
    assert run["status"] == "failed"
    assert "nan_or_inf" in (run["error"] or "")
