"""The plain API under torchrun (two CPU processes, gloo): one run per job, written by rank 0;
every rank's gradient summary in it; FSDP's sharded gradients give the global norm; tracing
on rank 0 only neither hangs nor slows the job's end."""

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
from tracer.analysis import QueryEngine  # noqa: E402
from tracer.capture.gradients.ranks import FINISH_WAIT_S  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (distributed.is_available() and distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available in this torch build",
    ),
]

SCRIPT = Path(__file__).with_name("distributed_training.py")
STEPS = 5
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


def test_fsdp_sharded_gradients_give_the_global_norm(tmp_path: Path) -> None:
    """fully_shard leaves each rank half of every parameter: the stored norm is still the
    whole gradient's (sum of squares all-reduced), equal to one process's reference."""
    launch(tmp_path, "fsdp")
    run, history = stored(tmp_path)
    assert run["status"] == "finished"
    assert history["grad/global_norm"]["values"] == pytest.approx(reference(), rel=1e-5)
    assert history["rank/1/grad_norm"]["values"] == pytest.approx(reference(), rel=1e-5)


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
