"""`TracerFabricLogger` under a real Lightning Fabric (CPU, one process): metrics, gradient
health at each optimizer step, hyperparameters, halt_on, and the lazy public name."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import tracer.integrations
from tests.core.helpers import open_store, series
from tests.lightning.helpers import FEATURES, loader
from tracer_lightning import TracerFabricLogger

fabric_module = pytest.importorskip("lightning.fabric")


def _train(logger: TracerFabricLogger, steps: int, nan_at: int = 0, watch: bool = True) -> int:
    """A tiny MLP trained by Fabric for `steps` optimizer steps (the loss NaN at optimizer
    step `nan_at`, 1-based); returns the steps taken (fewer when halt_on stopped it)."""
    torch.manual_seed(0)
    fabric = fabric_module.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)
    fabric.logger.log_hyperparams({"lr": 0.05, "hidden": 16})
    if watch:
        logger.watch(model, optimizer)
    batches = fabric.setup_dataloaders(loader(size=4 * steps))
    taken = 0
    for index, (x, y) in enumerate(batches):
        loss = torch.nn.functional.mse_loss(model(x), y)
        if index + 1 == nan_at:
            loss = loss * math.nan
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        fabric.log_dict({"loss": loss, "note": "text is skipped"})
        taken += 1
        if logger.should_stop:
            break
    logger.finalize("success")
    return taken


def test_fabric_metrics_and_gradients_land_at_each_optimizer_step() -> None:
    logger = TracerFabricLogger(project="fabric", checkpoint_interval=10)
    assert _train(logger, steps=30) == 30
    run = logger.run
    assert run is not None
    loss = series(run.run_id, "loss")
    assert loss["steps"] == list(range(1, 31))
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(1, 31))
    with open_store() as store:
        stored = store.get_run(run.run_id)
        checkpoints = store.get_checkpoints(run.run_id)
    assert stored is not None
    assert (stored["status"], stored["total_steps"]) == ("finished", 30)
    assert stored["config"] == {"lr": 0.05, "hidden": 16}
    assert checkpoints[0]["gradient_stats"]["0.weight"]["norm"] > 0


def test_without_watch_each_log_call_is_a_step() -> None:
    logger = TracerFabricLogger(project="fabric")
    _train(logger, steps=5, watch=False)
    assert logger.run is not None
    assert series(logger.run.run_id, "loss")["steps"] == list(range(5))


def test_halt_on_stops_the_loop_and_the_run_reads_failed() -> None:
    logger = TracerFabricLogger(
        project="fabric", halt_on=["nan_or_inf"], async_writes=False, checkpoint_interval=5
    )
    taken = _train(logger, steps=40, nan_at=8)
    assert taken < 40
    assert logger.run is not None
    with open_store() as store:
        stored = store.get_run(logger.run.run_id)
        anomalies = store.get_anomalies(logger.run.run_id, ["nan_or_inf"])
    assert stored is not None
    assert stored["status"] == "failed"
    assert stored["error"].startswith("training stopped by halt_on: training halted on")
    assert anomalies and anomalies[0]["step"] == 8


def test_a_typo_fails_at_construction_and_the_name_is_public() -> None:
    with pytest.raises(ValueError, match="checkpoint_intervall"):
        TracerFabricLogger(project="fabric", checkpoint_intervall=10)
    public: Any = tracer.integrations.TracerFabricLogger
    assert public is TracerFabricLogger
