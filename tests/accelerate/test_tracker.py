"""AccelerateTracker and tracer_accelerate.watch in one process: a real Accelerator(cpu=True)
loop with gradient accumulation, metrics through accelerator.log, status at end_training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator

import tracer
import tracer_accelerate
from tests.accelerate.helpers import PROJECT, batch, loss_of, make_model, reference_norms
from tracer.analysis import QueryEngine
from tracer.integrations import AccelerateTracker

LR = 0.05


def run_loop(
    accelerator: Accelerator,
    optimizer_steps: int,
    accumulation: int,
    *,
    watch: bool = True,
    corrupt_at: int = -1,
) -> Any:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT, config={"lr": LR})
    watched = tracer_accelerate.watch(accelerator, model, optimizer) if watch else None
    completed = 0
    for micro in range(optimizer_steps * accumulation):
        x, y = batch(micro)
        if micro // accumulation + 1 == corrupt_at:
            x = x.clone()
            x[0, 0] = float("inf")
        with accelerator.accumulate(model):
            loss = loss_of(model, x, y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            completed += 1
            accelerator.log({"loss": loss.detach(), "lr": LR}, step=completed)
    accelerator.end_training()
    return watched


def only_run(path: Path) -> tuple[QueryEngine, dict[str, Any]]:
    query = QueryEngine(str(path / ".tracer"))
    runs = query.list_runs()
    assert len(runs) == 1, runs
    return query, runs[0]


def test_accumulation_loop_logs_metrics_and_captures_once_per_optimizer_step(
    tmp_path: Path,
) -> None:
    """6 optimizer steps x 3 micro-batches: `loss` at steps 1..6 from accelerator.log, one
    gradient capture per optimizer step whose norm is the accumulated gradient's (the same
    as a plain torch loop's), config from init_trackers, finished with total_steps 6."""
    tracker = AccelerateTracker(PROJECT, run_name="accumulate", checkpoint_interval=2)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3, log_with=[tracker])
    run_loop(accelerator, optimizer_steps=6, accumulation=3)
    query, run = only_run(tmp_path)
    with query:
        run_id = run["run_id"]
        loss = query.get_metric_history(run_id, "loss")
        norms = query.get_metric_history(run_id, "grad/global_norm")
        capture = query.storage.get_events(run_id, "gradient_capture")
    assert run["status"] == "finished"
    assert run["run_name"] == "accumulate"
    assert run["total_steps"] == 6
    assert run["config"] == {"lr": LR}
    assert loss["steps"] == [1, 2, 3, 4, 5, 6]
    assert norms["steps"] == [1, 2, 3, 4, 5, 6]  # once per optimizer step, not per micro-batch
    assert norms["values"] == pytest.approx(reference_norms(6, 3, LR), rel=1e-5)
    assert capture[0]["data"]["point"] == tracer_accelerate.watching.CAPTURE_POINT
    assert tracker.tracker is tracker.run


def test_log_with_the_registered_name(tmp_path: Path) -> None:
    """`import tracer_accelerate` registers "tracer": log_with="tracer" with init_kwargs."""
    accelerator = Accelerator(cpu=True, log_with="tracer")
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(
        PROJECT, config={"batch": 8}, init_kwargs={"tracer": {"run_name": "by-name"}}
    )
    watched = tracer_accelerate.watch(accelerator, model, optimizer)
    assert watched.run is None  # the run starts with training (after a load_state, if any)
    for step in range(3):
        x, y = batch(step)
        accelerator.backward(loss_of(model, x, y))
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": 1.0 / (step + 1)}, step=step + 1)
    assert watched.run is not None
    assert accelerator.get_tracker("tracer", unwrap=True) is watched.run
    accelerator.end_training()
    query, stored = only_run(tmp_path)
    with query:
        assert stored["run_name"] == "by-name"
        assert stored["config"] == {"batch": 8}
        assert stored["status"] == "finished"
        assert query.get_metric_history(stored["run_id"], "grad/global_norm")["steps"] == [1, 2, 3]


def test_log_without_step_and_without_watch_makes_one_step_per_call(tmp_path: Path) -> None:
    """No watch, no step: each accelerator.log call is a step of its own (as in wandb);
    strings, which Accelerate allows, are skipped with one warning."""
    accelerator = Accelerator(cpu=True, log_with=[AccelerateTracker(PROJECT)])
    accelerator.init_trackers(PROJECT)
    for value in (3.0, 2.0, 1.0):
        accelerator.log({"loss": value, "phase": "train"})
    accelerator.end_training()
    query, run = only_run(tmp_path)
    with query:
        history = query.get_metric_history(run["run_id"], "loss")
        names = [m["name"] for m in query.storage.list_metrics(run["run_id"])]
    assert history == {"steps": [0, 1, 2], "values": [3.0, 2.0, 1.0]}
    assert "phase" not in names


def test_nonfinite_gradient_is_found_and_halts_through_the_trigger(tmp_path: Path) -> None:
    """An Inf input at optimizer step 3 -> `nan_or_inf` on the gradients of step 3, naming
    the first layer (tanh keeps that step's loss finite), then on the loss of step 4; with
    halt_on the watch sets Accelerate's trigger (at the next optimizer step) and the run
    ends failed."""
    tracker = AccelerateTracker(PROJECT, halt_on=["nan_or_inf"], flush_interval=0.05)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2, log_with=[tracker])
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT)
    watched = tracer_accelerate.watch(accelerator, model, optimizer)
    stopped_at = None
    for micro in range(40):
        x, y = batch(micro)
        if micro // 2 + 1 == 3:
            x = x.clone()
            x[0, 0] = float("inf")
        with accelerator.accumulate(model):
            loss = loss_of(model, x, y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            accelerator.log({"loss": loss.detach()}, step=micro // 2 + 1)
            assert watched.run is not None
            watched.run.flush()  # a test shortcut: let the writer judge this step now
            if accelerator.check_trigger():
                stopped_at = micro // 2 + 1
                break
    accelerator.end_training()
    query, stored = only_run(tmp_path)
    with query:
        anomalies = query.storage.get_anomalies(stored["run_id"])
    assert stopped_at is not None and 3 <= stopped_at <= 5
    found = {(a["step"], a["subject"]) for a in anomalies if a["anomaly_type"] == "nan_or_inf"}
    assert {(3, "0.weight"), (4, "loss")} <= found
    assert stored["status"] == "failed"


def test_skipped_optimizer_step_is_recorded(tmp_path: Path) -> None:
    """A GradScaler that finds Inf gradients skips the step: Accelerate says
    step_was_skipped; the run gets `optimizer/skipped_step` and no capture at that step."""
    accelerator = Accelerator(cpu=True, log_with=[AccelerateTracker(PROJECT)])
    # What Accelerate sets up for fp16 on a GPU: prepare() hands it to the optimizer and
    # accelerator.backward() scales the loss with it.
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(PROJECT)
    tracer_accelerate.watch(accelerator, model, optimizer)
    for step in range(1, 5):
        x, y = batch(step)
        if step == 2:
            x = x.clone()
            x[0, 0] = float("inf")
        accelerator.backward(loss_of(model, x, y))
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": float(step)}, step=step)
    accelerator.end_training()
    query, run = only_run(tmp_path)
    with query:
        run_id = run["run_id"]
        skipped = query.get_metric_history(run_id, "optimizer/skipped_step")
        captured = query.get_metric_history(run_id, "grad/global_norm")["steps"]
    assert skipped["steps"] == [2]
    assert captured == [1, 3, 4]
    assert run["total_steps"] == 4


def test_watch_on_the_main_process_needs_a_run() -> None:
    accelerator = Accelerator(cpu=True)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    with pytest.raises(RuntimeError, match="init_trackers"):
        tracer_accelerate.watch(accelerator, model, optimizer)
    run = tracer.init(project=PROJECT)  # a plain run works as well
    assert tracer_accelerate.watch(accelerator, model, optimizer).run is run


def test_tracker_settings_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="checkpoint_interval"):
        AccelerateTracker(PROJECT, checkpoint_intervall=10)
