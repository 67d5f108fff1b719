"""Keeping the last healthy checkpoint under a real `Accelerator` that rotates its own
checkpoints (`ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=2)`):
`save_state()` every 2 optimizer steps, a NaN batch at step 7 (the weights NaN after it). The
state saved at step 6 must survive, pinned under `<storage>/pinned/<run>/`, loadable by
`load_state`, and be named by `last_healthy_checkpoint`."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

import tracer_accelerate
from tests.accelerate.helpers import PROJECT, batch, loss_of, make_model, reset_accelerate
from tracer.actions.pins import list_pins
from tracer.analysis import QueryEngine
from tracer.integrations import AccelerateTracker

NAN_STEP = 7
STEPS = 14


def test_total_limit_deletes_the_healthy_state_but_the_pin_keeps_it(tmp_path: Path) -> None:
    reset_accelerate()
    tracker = AccelerateTracker(
        PROJECT, pin_checkpoints=True, flush_interval=0.05, track_system_metrics=False
    )
    project = ProjectConfiguration(
        project_dir=str(tmp_path / "project"), automatic_checkpoint_naming=True, total_limit=2
    )
    accelerator = Accelerator(cpu=True, log_with=[tracker], project_config=project)
    accelerator.init_trackers(PROJECT)
    model = make_model()  # the optimizer over its own parameters, not a second copy's
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.05))
    tracer_accelerate.watch(accelerator, model, optimizer)
    for step in range(1, STEPS + 1):
        x, y = batch(step)
        if step == NAN_STEP:
            x[0, 0] = math.nan
        loss = loss_of(model, x, y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": loss.detach()}, step=step)
        if step % 2 == 0:
            accelerator.save_state()  # checkpoints/checkpoint_<n>, the oldest deleted
    accelerator.end_training()

    folders = tmp_path / "project" / "checkpoints"
    assert sorted(p.name for p in folders.iterdir()) == ["checkpoint_5", "checkpoint_6"]
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        [run] = query.list_runs(PROJECT)
        healthy = query.last_healthy_checkpoint(run["run_id"])
    pins = list_pins(str(tmp_path / ".tracer"), run["run_id"])
    assert [p.name for p in pins] == ["checkpoint_2"]  # the third save: step 6
    assert healthy is not None and healthy["step"] == 6
    assert healthy["path"] == str(folders / "checkpoint_2")
    assert healthy["pinned_path"] == pins[0].path

    reset_accelerate()
    again = Accelerator(cpu=True)
    restored = again.prepare(make_model())
    again.load_state(pins[0].path)
    assert all(bool(torch.isfinite(p).all()) for p in restored.parameters())
