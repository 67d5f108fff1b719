"""Two processes with `Trainer(strategy="ddp", devices=2, accelerator="cpu")` (gloo): Lightning
launches the second process itself (its subprocess launcher re-runs the script). Only global
zero writes: exactly one run, every series' steps strictly increasing (no rank duplicates a
row), `grad/global_norm` once per optimizer step, status finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed

from tests.lightning.helpers import PROJECT, only_run, strictly_increasing
from tracer.analysis import QueryEngine

pytestmark = pytest.mark.slow

TIMEOUT_S = 180.0
MAX_STEPS = 6

DDP_TRAINING = """
    import json, os, sys
    import torch
    from tests.lightning.helpers import make_trainer, tiny_module, tracer_callback

    torch.set_num_threads(1)
    trainer = make_trainer(
        "lightning.pytorch",
        [tracer_callback()],
        strategy="ddp",
        devices=2,
        max_steps=int(sys.argv[1]),
    )
    trainer.fit(tiny_module("lightning.pytorch"))
    with open(f"rank-{trainer.global_rank}.json", "w") as handle:
        json.dump({"global_step": trainer.global_step, "world_size": trainer.world_size}, handle)
"""


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_ddp_two_processes_write_one_run(tmp_path: Path) -> None:
    """strategy="ddp", devices=2 on CPU: one finished run with world size 2 at rank 0, each
    series written once per step, `grad/global_norm` and `train_loss` at steps 1..6."""
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_TRAINING))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    env.pop("TRACER_STORAGE_PATH", None)
    env.pop("TRACER_MODE", None)
    try:
        finished = subprocess.run(
            [sys.executable, str(script), str(MAX_STEPS)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"DDP training did not finish in {TIMEOUT_S:.0f} s: {error.stderr!r}")
    assert finished.returncode == 0, finished.stderr[-4000:]

    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:  # both processes really trained, data-parallel
        assert report == {"global_step": MAX_STEPS, "world_size": 2}
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        run = only_run(query.list_runs(), PROJECT)
        run_id = run["run_id"]
        history = {
            m["name"]: query.get_metric_history(run_id, m["name"])
            for m in query.storage.list_metrics(run_id)
        }
    assert run["status"] == "finished"
    assert run["total_steps"] == MAX_STEPS
    assert (run["rank"], run["world_size"]) == (0, 2)
    for name, points in history.items():
        assert strictly_increasing(points["steps"]), (name, points["steps"])
    assert history["grad/global_norm"]["steps"] == list(range(1, MAX_STEPS + 1))
    assert history["train_loss"]["steps"] == list(range(1, MAX_STEPS + 1))
    # Rank 1 follows: its own gradient norm (before DDP's all-reduce) reaches the run.
    for rank in (0, 1):
        assert history[f"rank/{rank}/grad_norm"]["steps"] == list(range(1, MAX_STEPS + 1))
    assert history["rank/0/grad_norm"]["values"] != history["rank/1/grad_norm"]["values"]
