"""Two processes under `torchrun` (CPU, gloo, DDP through the Trainer): one Tracer run.

Only world process zero writes: exactly one run, every series written once per step (no rank
duplicates it), one gradient capture per optimizer step of the all-reduced gradients, the
run's rank and world size, both ranks' gradient summaries, and "finished".
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch.distributed

from tests.hf.helpers import PROJECT, only_run, strictly_increasing
from tests.torchrun import run_torchrun
from tracer.analysis import QueryEngine

pytestmark = pytest.mark.slow

TIMEOUT_S = 180.0
MAX_STEPS = 6

# argv: max_steps. Each rank writes norms-<rank>.json: its reference norms and its setup.
DDP_TRAINING = """
    import json, os, sys
    import torch
    from tests.hf.helpers import ReferenceNorm, make_trainer, tracer_callback

    torch.set_num_threads(1)
    reference = ReferenceNorm()
    trainer = make_trainer(
        "out",
        [tracer_callback(), reference],
        max_steps=int(sys.argv[1]),
        ddp_backend="gloo",
        eval_steps=2,
        save_steps=3,
    )
    trainer.train()
    rank = int(os.environ["RANK"])
    with open(f"norms-{rank}.json", "w") as handle:
        json.dump(
            {
                "global_step": trainer.state.global_step,
                "norms": reference.norms,
                "distributed": str(trainer.accelerator.distributed_type),
                "world_size": torch.distributed.get_world_size(),
                "model": type(trainer.model_wrapped).__name__,
            },
            handle,
        )
"""


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_torchrun_two_processes_write_one_run(tmp_path: Path) -> None:
    """torchrun --nproc_per_node=2 on CPU: one finished run with rank 0 / world size 2, each
    series' steps strictly increasing (no row from the second rank), `grad/global_norm` once
    per optimizer step, equal to the clipped norm of the gradients both ranks hold (synced)."""
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_TRAINING))
    run_torchrun(script, [MAX_STEPS], tmp_path, timeout=TIMEOUT_S)

    reports = [json.loads((tmp_path / f"norms-{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:  # the Trainer really trained data-parallel on both ranks
        assert report["global_step"] == MAX_STEPS
        assert report["world_size"] == 2
        assert report["model"] == "DistributedDataParallel"
        assert report["distributed"].endswith("MULTI_CPU"), report["distributed"]
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        run = only_run(query.list_runs())
        run_id = run["run_id"]
        history = {
            m["name"]: query.get_metric_history(run_id, m["name"])
            for m in query.storage.list_metrics(run_id)
        }
        saves = [e["step"] for e in query.storage.get_events(run_id, "model_saved")]
    assert run["project_name"] == PROJECT
    assert run["status"] == "finished"
    assert (run["rank"], run["world_size"]) == (0, 2)
    assert run["total_steps"] == MAX_STEPS
    assert run["config"]["training_args"]["ddp_backend"] == "gloo"
    for name, points in history.items():
        assert strictly_increasing(points["steps"]), (name, points["steps"])
    assert history["loss"]["steps"] == [2, 4, 6]
    assert history["eval_loss"]["steps"] == [2, 4, 6]
    assert saves == [3, 6]

    grad = history["grad/global_norm"]
    assert grad["steps"] == list(range(1, MAX_STEPS + 1))
    rank0, rank1 = (r["norms"] for r in reports)
    for step, value in zip(grad["steps"], grad["values"], strict=True):
        assert value == pytest.approx(rank0[str(step)], rel=1e-5), step
        assert rank1[str(step)] == pytest.approx(rank0[str(step)], rel=1e-6), step  # synced
    # Rank 1 follows: its gradient summary reaches the run. The Trainer's DDP wrapper is not
    # visible to callbacks, so both ranks report the synchronised norm, equal on both.
    for rank in (0, 1):
        summary = history[f"rank/{rank}/grad_norm"]
        assert summary["steps"] == grad["steps"]
        assert summary["values"] == pytest.approx(grad["values"], rel=1e-5)
