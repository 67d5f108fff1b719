"""`on_nonfinite="skip"` under a real Lightning `Trainer` (both namespaces) and Fabric: a NaN
loss at chosen optimizer steps makes every gradient of those steps NaN. The callback skips
those steps at `on_before_optimizer_step`: the weights stay as they were and finite, the skip
is stored, and a streak of skips stops the Trainer (`trainer.should_stop`), the run failed
with the reason."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch

from tests.core.helpers import series
from tests.lightning.helpers import (
    FEATURES,
    NAMESPACES,
    PROJECT,
    loader,
    make_trainer,
    module_class,
    namespace,
    only_run,
    tracer_callback,
)
from tracer.analysis import QueryEngine
from tracer_lightning import TracerFabricLogger


@functools.cache
def nan_module_class(ns: str) -> type:
    """The tiny module of `ns` whose loss is NaN at the optimizer steps in `nan_steps`."""

    class NanSteps(module_class(ns)):  # type: ignore[misc]
        def __init__(self, nan_steps: tuple[int, ...] = ()) -> None:
            super().__init__()
            self.nan_steps = nan_steps

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            if self.trainer.global_step + 1 in self.nan_steps:
                loss = loss * float("nan")
            return loss

    return NanSteps


@functools.cache
def weights_class(ns: str) -> type:
    pl = namespace(ns)

    class WeightsAtStepEnd(pl.Callback):  # type: ignore[misc,name-defined]
        """The module's weights (one flat copy) after each optimizer step, by global step."""

        def __init__(self) -> None:
            self.weights: dict[int, torch.Tensor] = {}

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            self.weights[trainer.global_step] = flat.clone()

    return WeightsAtStepEnd


def fit(ns: str, nan_steps: tuple[int, ...], max_steps: int, **settings: Any) -> Any:
    weights = weights_class(ns)()
    trainer = make_trainer(
        ns, [tracer_callback(on_nonfinite="skip", **settings), weights], max_steps=max_steps
    )
    trainer.fit(nan_module_class(ns)(nan_steps=nan_steps))
    return trainer, weights.weights


@pytest.mark.parametrize("ns", NAMESPACES)
def test_a_nan_step_is_skipped_counted_and_the_weights_stay_finite(ns: str) -> None:
    trainer, weights = fit(ns, (5,), max_steps=10)
    assert trainer.global_step == 10
    assert torch.equal(weights[5], weights[4])  # step 5 changed nothing
    assert not torch.equal(weights[6], weights[5])  # and training went on
    assert all(bool(w.isfinite().all()) for w in weights.values())
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        skipped = query.get_metric_history(run["run_id"], "optimizer/skipped_step")
        norms = query.get_metric_history(run["run_id"], "grad/global_norm")
    assert run["status"] == "finished"
    assert skipped["steps"] == [5]
    assert math.isnan(dict(zip(norms["steps"], norms["values"], strict=True))[5])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_skips_in_a_row_stop_the_trainer_and_fail_the_run(ns: str) -> None:
    trainer, weights = fit(ns, (3, 4), max_steps=30, max_consecutive_skips=2)
    assert trainer.global_step == 4  # stopped after the second skip in a row
    assert torch.equal(weights[4], weights[2])
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        skipped = query.get_metric_history(run["run_id"], "optimizer/skipped_step")
    assert run["status"] == "failed"
    assert "max_consecutive_skips=2" in (run["error"] or "")
    assert skipped["steps"] == [3, 4]


def test_fabric_skips_a_nan_step() -> None:
    """Fabric: the watch's optimizer pre-hook skips the NaN step 3 (optimizer steps from 1)."""
    fabric_module = pytest.importorskip("lightning.fabric")
    logger = TracerFabricLogger(project="fabric", on_nonfinite="skip", track_system_metrics=False)
    torch.manual_seed(0)
    fabric = fabric_module.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    logger.watch(model, optimizer)
    unchanged = []
    for index, (x, y) in enumerate(fabric.setup_dataloaders(loader(size=24))):
        loss = torch.nn.functional.mse_loss(model(x), y)
        if index + 1 == 3:
            loss = loss * math.nan
        fabric.backward(loss)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.step()
        if all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)):
            unchanged.append(index + 1)
        optimizer.zero_grad()
        fabric.log_dict({"loss": loss})
    logger.finalize("success")
    assert unchanged == [3]
    assert all(bool(p.isfinite().all()) for p in model.parameters())
    assert logger.run is not None
    assert series(logger.run.run_id, "optimizer/skipped_step")["steps"] == [3]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_under_a_grad_scaler_the_scaler_skips_the_nan_step(ns: str) -> None:
    """16-bit mixed precision (its GradScaler, here on the CPU): the scaler finds the NaN
    and skips step 5 itself; Tracer leaves that step to it, so with max_consecutive_skips=1
    training still goes on to the end."""
    plugin = namespace(ns).plugins.precision.MixedPrecision(
        "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")
    )
    weights = weights_class(ns)()
    callback = tracer_callback(on_nonfinite="skip", max_consecutive_skips=1)
    trainer = make_trainer(ns, [callback, weights], max_steps=8, plugins=[plugin])
    trainer.fit(nan_module_class(ns)(nan_steps=(5,)))
    assert trainer.global_step == 8
    assert torch.equal(weights.weights[5], weights.weights[4])
    assert all(bool(w.isfinite().all()) for w in weights.weights.values())
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert run["status"] == "finished"
