"""`on_nonfinite="skip"` in a real Accelerate loop (one CPU process, gradient accumulation 2):
an Inf in the inputs of chosen optimizer steps makes their accumulated gradients non-finite.
The watch's optimizer pre-hook skips those steps (only real steps: accumulation micro-steps
never reach it): the weights stay as they were and finite, the skip is stored, and a streak
of skips sets Accelerate's trigger, the run failed with the reason at end_training. Under
torchrun with DDP (tests/accelerate/skip_accelerate.py) both ranks skip the same step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed
from accelerate import Accelerator

import tracer_accelerate
from tests.accelerate.helpers import PROJECT, batch, loss_of, make_model
from tests.torchrun import run_torchrun
from tracer.analysis import QueryEngine
from tracer.integrations import AccelerateTracker

ACCUMULATION = 2


def flat(model: Any) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def train(
    steps: int, bad_steps: tuple[int, ...], **settings: Any
) -> tuple[dict[int, torch.Tensor], int]:
    """Weights after each optimizer step (1-based) of an SGD-with-momentum loop, an Inf in
    the inputs of the optimizer steps in `bad_steps`; returns them and the steps completed
    (fewer when the trigger stopped the loop)."""
    tracker = AccelerateTracker(
        PROJECT, on_nonfinite="skip", track_system_metrics=False, **settings
    )
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=ACCUMULATION, log_with=[tracker]
    )
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT)
    tracer_accelerate.watch(accelerator, model, optimizer)
    weights = {0: flat(model)}
    completed = 0
    for micro in range(steps * ACCUMULATION):
        x, y = batch(micro)
        if micro // ACCUMULATION + 1 in bad_steps:
            x = x.clone()
            x[0, 0] = float("inf")
        with accelerator.accumulate(model):
            loss = loss_of(model, x, y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            completed += 1
            weights[completed] = flat(model)
            accelerator.log({"loss": loss.detach()}, step=completed)
            if accelerator.check_trigger():
                break
    accelerator.end_training()
    return weights, completed


def stored_run(path: Path) -> tuple[dict[str, Any], list[int]]:
    with QueryEngine(str(path / ".tracer")) as query:
        runs = query.list_runs()
        assert len(runs) == 1, runs
        skipped = query.get_metric_history(runs[0]["run_id"], "optimizer/skipped_step")
    return runs[0], skipped["steps"]


def test_a_non_finite_step_is_skipped_counted_and_the_weights_stay_finite(
    tmp_path: Path,
) -> None:
    weights, completed = train(8, (3,))
    assert completed == 8
    assert torch.equal(weights[3], weights[2])  # step 3 changed nothing
    assert not torch.equal(weights[4], weights[3])  # and training went on
    assert all(bool(w.isfinite().all()) for w in weights.values())
    run, skipped = stored_run(tmp_path)
    assert run["status"] == "finished"
    assert skipped == [3]


def test_skips_in_a_row_set_the_trigger_and_fail_the_run(tmp_path: Path) -> None:
    weights, completed = train(20, (3, 4), max_consecutive_skips=2)
    assert completed == 4
    assert torch.equal(weights[4], weights[2])
    run, skipped = stored_run(tmp_path)
    assert run["status"] == "failed"
    assert "max_consecutive_skips=2" in (run["error"] or "")
    assert skipped == [3, 4]


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_two_processes_skip_the_same_step(tmp_path: Path) -> None:
    """DDP over two CPU processes (torchrun), a NaN in rank 1's slice at optimizer step 3:
    both ranks (the main process's run and rank 1's follower) skip exactly step 3, end with
    the same finite weights, and the one stored run counts the skip."""
    run_torchrun(Path(__file__).with_name("skip_accelerate.py"), [6, 3], tmp_path, timeout=240)
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["unchanged"] for r in reports] == [[3], [3]]
    assert reports[0]["weights"] == reports[1]["weights"]
    assert all(math.isfinite(w) for w in reports[0]["weights"])
    run, skipped = stored_run(tmp_path)
    assert run["status"] == "finished"
    assert skipped == [3]
