"""The silent-bug probe under a real `Accelerator(cpu=True)`: `tracer_accelerate.watch` hands
the torch optimizer under the `AcceleratedOptimizer` to `run.watch`, so the probe samples
every 10th real optimizer step (not the micro-steps of `accumulate()`). A healthy loop with
accumulation and evaluation in eval() mode reports nothing; an optimizer built for another
copy of the model and an evaluation left in train() mode are caught."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

import tracer
import tracer_accelerate
from tests.accelerate.helpers import FEATURES, PROJECT, batch, loss_of
from tests.core.helpers import series
from tests.silent_reports import ALL_SILENT_ON, probe_steps, report_types, silent_reports
from tracer.analysis import QueryEngine
from tracer.integrations import AccelerateTracker
from tracer.integrations.adapter import torch_optimizer

STEPS = 25
ACCUMULATION = 2


def dropout_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 1),
    )


def train(*, another_copy: bool = False, eval_mode: bool = True, watch_late: bool = False) -> str:
    """STEPS optimizer steps of ACCUMULATION micro-batches, evaluation (under no_grad) every
    10 steps; the optimizer built for a deep copy of the model when `another_copy`, the
    evaluation without `model.eval()` when not `eval_mode`, `watch()` called between the
    first optimizer step's last forward and its step when `watch_late`. The run's id."""
    tracker = AccelerateTracker(PROJECT, track_system_metrics=False, **ALL_SILENT_ON)
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=ACCUMULATION, log_with=[tracker]
    )
    model = dropout_model()
    optimized = copy.deepcopy(model) if another_copy else model
    optimizer = torch.optim.SGD(optimized.parameters(), lr=0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT)
    watched: Any = None if watch_late else tracer_accelerate.watch(accelerator, model, optimizer)
    completed = 0
    for micro in range(STEPS * ACCUMULATION):
        x, y = batch(micro)
        with accelerator.accumulate(model):
            loss = loss_of(model, x, y)
            if watched is None and micro == ACCUMULATION - 1:  # the first step's last forward
                watched = tracer_accelerate.watch(accelerator, model, optimizer)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            completed += 1
            accelerator.log({"loss": loss.detach()}, step=completed)
            if completed % 10 == 0:
                if eval_mode:
                    model.eval()
                with torch.no_grad():
                    loss_of(model, *batch(10_000 + completed))
                model.train()
    accelerator.end_training()
    with QueryEngine(storage_path="./.tracer") as query:
        runs = query.list_runs()
    assert len(runs) == 1, runs
    return str(runs[0]["run_id"])


def test_healthy_loop_with_accumulation_and_evaluation_reports_nothing(tmp_path: Path) -> None:
    """Every silent-bug detector on: no report; samples at optimizer steps 1, 11, 21 (the
    tracer steps of Accelerate's `completed_steps`), each with the update size."""
    run_id = train()
    assert silent_reports(run_id) == []
    assert probe_steps(run_id) == {
        "optimizer/lr/0": [1, 11, 21],
        "optimizer/update_ratio_median": [1, 11, 21],
    }


def test_watch_between_a_forward_and_its_step_probes_from_that_step(tmp_path: Path) -> None:
    """The run attaches inside the optimizer's pre-hook (no forward since `watch()`): the
    probe's hooks are added there without disturbing torch's, and sample that same step."""
    run_id = train(watch_late=True)
    assert silent_reports(run_id) == []
    assert probe_steps(run_id)["optimizer/update_ratio_median"] == [1, 11, 21]


def test_optimizer_of_another_copy_is_critical(tmp_path: Path) -> None:
    """None of the model's parameters is in the optimizer: one critical report says so
    (gradients_not_reset watches a parameter of the optimizer, so it has none to watch; the
    model's gradients are never reset, but the report that matters is this one)."""
    run_id = train(another_copy=True)
    assert report_types(run_id) == {"parameters_outside_optimizer": "critical"}


def test_evaluation_in_train_mode_is_reported(tmp_path: Path) -> None:
    run_id = train(eval_mode=False)
    assert report_types(run_id) == {"evaluation_in_train_mode": "warning"}


def test_tracer_watch_unwraps_the_accelerated_optimizer(tmp_path: Path) -> None:
    """`tracer.watch(model, optimizer=<AcceleratedOptimizer>)` in a plain Accelerate loop:
    hooked on the torch optimizer inside, so with accumulation 2 over 12 optimizer steps the
    gradients are captured and the probe samples once per real step, not per micro-step."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=ACCUMULATION)
    model = dropout_model()
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.05))
    assert torch_optimizer(optimizer) is optimizer.optimizer
    run = tracer.init(project=PROJECT, track_system_metrics=False, **ALL_SILENT_ON)
    tracer.watch(model, optimizer=optimizer)
    for micro in range(12 * ACCUMULATION):
        with accelerator.accumulate(model):
            accelerator.backward(loss_of(model, *batch(micro)))
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(12))
    assert probe_steps(run.run_id)["optimizer/update_ratio_median"] == [0, 10]
    assert silent_reports(run.run_id) == []
