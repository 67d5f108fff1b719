"""Two processes under torchrun (CPU, gloo) running a real Accelerate loop: one Tracer run.

(`accelerate launch --cpu --num_processes 2` starts its CPU workers through mpirun, which
these machines do not have; torchrun is what it uses for GPUs and what Accelerate detects.)
Each run trains 6 optimizer steps of 2 micro-batches; every rank takes its half of each
batch, so DDP's averaged gradient is the whole batch's, which a single process computes here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch.distributed

from tests.accelerate.helpers import PROJECT, reference_norms
from tests.torchrun import run_torchrun
from tracer.analysis import QueryEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available in this torch build",
    ),
]

SCRIPT = Path(__file__).with_name("train_accelerate.py")
TIMEOUT_S = 240.0
STEPS, ACCUMULATION, LR = 6, 2, 0.05


def launch(
    cwd: Path,
    nan_rank: int = -1,
    nan_step: int = -1,
    steps: int = STEPS,
    resume_dir: str = "-",
    save_dir: str = "-",
) -> None:
    arguments = [steps, ACCUMULATION, nan_rank, nan_step, resume_dir, save_dir]
    run_torchrun(SCRIPT, arguments, cwd, timeout=TIMEOUT_S)
    for rank in (0, 1):  # Accelerate really ran data-parallel on two CPU processes
        report = json.loads((cwd / f"rank-{rank}.json").read_text())
        assert report["world_size"] == 2
        assert report["distributed"].endswith("MULTI_CPU"), report


def read_run(cwd: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[Any]]], list[Any]]:
    with QueryEngine(str(cwd / ".tracer")) as query:
        runs = query.list_runs()
        assert len(runs) == 1, runs  # one run per job, not one per rank
        run = runs[0]
        names = [m["name"] for m in query.storage.list_metrics(run["run_id"])]
        history = {name: query.get_metric_history(run["run_id"], name) for name in names}
        anomalies = query.storage.get_anomalies(run["run_id"])
    return run, history, anomalies


def test_one_run_with_both_ranks_summaries_and_the_reference_global_norm(tmp_path: Path) -> None:
    launch(tmp_path)
    run, history, anomalies = read_run(tmp_path)
    assert (run["project_name"], run["status"]) == (PROJECT, "finished")
    assert (run["rank"], run["world_size"], run["total_steps"]) == (0, 2, STEPS)
    assert run["config"] == {"lr": LR, "accumulation": ACCUMULATION}
    expected_steps = list(range(1, STEPS + 1))
    # Rank 0 alone writes: each series holds each step once (a second writer would repeat).
    for name, series in history.items():
        assert series["steps"] == sorted(set(series["steps"])), name
    assert history["loss"]["steps"] == expected_steps
    assert history["grad/global_norm"]["steps"] == expected_steps  # once per optimizer step
    # DDP's all-reduced gradient norm equals one process's norm of the whole batch.
    assert history["grad/global_norm"]["values"] == pytest.approx(
        reference_norms(STEPS, ACCUMULATION, LR), rel=1e-5
    )
    for rank in (0, 1):
        norms = history[f"rank/{rank}/grad_norm"]
        assert norms["steps"] == expected_steps
        assert all(math.isfinite(v) and v > 0 for v in norms["values"])
        assert history[f"rank/{rank}/grad_nonfinite"]["values"] == [0.0] * STEPS
        assert all(v > 10 for v in history[f"rank/{rank}/peak_memory_mb"]["values"])
    # Measured before the all-reduce: each rank's own half-batch, so the two differ.
    assert history["rank/0/grad_norm"]["values"] != history["rank/1/grad_norm"]["values"]
    assert [a for a in anomalies if a["anomaly_type"] == "rank_divergence"] == []
    # Each rank's weight fingerprint at the first capture, equal: the replicas agree.
    assert history["rank/0/weight_fingerprint"]["steps"] == [1]
    assert history["rank/0/weight_fingerprint"] == history["rank/1/weight_fingerprint"]
    assert [a for a in anomalies if a["anomaly_type"] == "replica_divergence"] == []


def test_nan_on_rank_one_is_named(tmp_path: Path) -> None:
    """Rank 1's batch of optimizer step 4 holds a NaN: at step 4 rank 1's own gradients are
    non-finite while rank 0's are not (the all-reduce then spreads it)."""
    launch(tmp_path, nan_rank=1, nan_step=4)
    run, history, anomalies = read_run(tmp_path)
    assert run["status"] == "finished"
    divergence = [a for a in anomalies if a["anomaly_type"] == "rank_divergence"]
    assert [(a["step"], a["subject"], a["severity"]) for a in divergence] == [
        (4, "rank/1", "critical")
    ]
    assert "rank 1" in divergence[0]["message"]
    nonfinite = {(a["step"], a["subject"]) for a in anomalies if a["anomaly_type"] == "nan_or_inf"}
    assert (4, "rank/1/grad_norm") in nonfinite
    assert (4, "rank/0/grad_norm") not in nonfinite
    assert history["rank/1/grad_nonfinite"]["values"][:4] == [0.0, 0.0, 0.0, 1.0]
    assert history["rank/0/grad_nonfinite"]["values"][:4] == [0.0, 0.0, 0.0, 0.0]


def test_two_rank_job_resumed_from_save_state_continues_one_run(tmp_path: Path) -> None:
    """3 optimizer steps, save_state, end; a second two-rank job load_states and trains 3
    more: one run, finished with 6 steps, and every rank's summaries at steps 1-6 once each
    (rank 1 continues its count from the checkpoint that rank 0 wrote the count into)."""
    half = STEPS // 2
    launch(tmp_path, steps=half, save_dir="ckpt/step")
    launch(tmp_path, steps=half, resume_dir=f"ckpt/step_{half}")
    run, history, _ = read_run(tmp_path)
    assert (run["status"], run["total_steps"]) == ("finished", STEPS)
    expected_steps = list(range(1, STEPS + 1))
    assert history["loss"]["steps"] == expected_steps
    assert history["grad/global_norm"]["values"] == pytest.approx(
        reference_norms(STEPS, ACCUMULATION, LR), rel=1e-5
    )
    # Each job fingerprints the weights at its first capture; the resumed ranks agree too.
    assert history["rank/0/weight_fingerprint"]["steps"] == [1, half + 1]
    assert history["rank/0/weight_fingerprint"] == history["rank/1/weight_fingerprint"]
    for rank in (0, 1):
        assert history[f"rank/{rank}/grad_norm"]["steps"] == expected_steps
