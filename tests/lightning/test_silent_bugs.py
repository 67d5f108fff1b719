"""The silent-bug probe under a real Lightning `Trainer` (both namespaces) and Fabric: the
callback hands the module's optimizer to `run.watch` (Lightning runs forward and backward
inside `optimizer.step(closure)`, so step k begins inside the probe's hooks of step k: the
samples must still land at the right step), Fabric's logger the optimizer under its wrapper.
Healthy fits with validation (the sanity check, validation under `inference_mode`) report
nothing; an optimizer over the backbone only, a validation step that puts the model back in
train() mode and a Fabric optimizer of another copy of the model are caught; a GAN-style
module with two optimizers is not probed (neither holds all of its parameters)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.lightning.helpers import (
    FEATURES,
    NAMESPACES,
    PROJECT,
    loader,
    make_trainer,
    namespace,
    only_run,
    tracer_callback,
)
from tests.silent_reports import ALL_SILENT_ON, probe_steps, report_types, silent_reports
from tracer.analysis import QueryEngine
from tracer.integrations.adapter import torch_optimizer
from tracer_lightning import TracerFabricLogger

STEPS = 25


@functools.cache
def module_class(ns: str) -> type:
    """An MLP with dropout (so train/eval mode matters) whose bugs are switched by hparams:
    `optimize` "all" or "backbone"; `train_in_validation` calls `self.train()` inside
    `validation_step`, so validation runs with dropout on."""
    pl = namespace(ns)

    class DropoutModule(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self, optimize: str = "all", train_in_validation: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters()
            torch.manual_seed(0)
            self.backbone = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1)
            )
            self.head = torch.nn.Linear(16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.backbone(x))
            return out

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            if self.hparams.train_in_validation:
                self.train()
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            part = self.backbone if self.hparams.optimize == "backbone" else self
            return torch.optim.SGD(part.parameters(), lr=0.05)

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(128)

        def val_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(8, seed=1)

    DropoutModule.__qualname__ = DropoutModule.__name__ = f"DropoutModule_{ns.replace('.', '_')}"
    globals()[DropoutModule.__name__] = DropoutModule
    return DropoutModule


@functools.cache
def gan_class(ns: str) -> type:
    """Manual optimization with two optimizers, each over half of the module (a GAN)."""
    pl = namespace(ns)

    class TwoOptimizers(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            torch.manual_seed(0)
            self.generator = torch.nn.Linear(FEATURES, FEATURES)
            self.critic = torch.nn.Linear(FEATURES, 1)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            x, _ = batch
            opt_g, opt_c = self.optimizers()
            critic_loss = self.critic(self.generator(x).detach()).mean() - self.critic(x).mean()
            opt_c.zero_grad()
            self.manual_backward(critic_loss)
            opt_c.step()
            generator_loss = -self.critic(self.generator(x)).mean()
            opt_g.zero_grad()
            self.manual_backward(generator_loss)
            opt_g.step()

        def configure_optimizers(self) -> list[torch.optim.Optimizer]:
            return [
                torch.optim.SGD(self.generator.parameters(), lr=0.01),
                torch.optim.SGD(self.critic.parameters(), lr=0.01),
            ]

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return loader(128)

    TwoOptimizers.__qualname__ = TwoOptimizers.__name__ = f"TwoOptimizers_{ns.replace('.', '_')}"
    globals()[TwoOptimizers.__name__] = TwoOptimizers
    return TwoOptimizers


def fit(ns: str, module: Any, **overrides: Any) -> str:
    """Fit `module` for STEPS optimizer steps with validation every 10 batches (after the
    sanity check); the run's id."""
    settings: dict[str, Any] = {"max_steps": STEPS, "val_check_interval": 10, **overrides}
    trainer = make_trainer(ns, [tracer_callback(**ALL_SILENT_ON)], **settings)
    trainer.fit(module)
    with QueryEngine(storage_path="./.tracer") as query:
        return str(only_run(query.list_runs(), PROJECT)["run_id"])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_healthy_fit_with_validation_reports_nothing(ns: str, tmp_path: Path) -> None:
    """The sanity check and validation every 10 optimizer steps (eval() and inference_mode,
    and Lightning's zero_grad before it), every silent-bug detector on: no report. The probe
    samples optimizer steps 1, 11 and 21, stored at Lightning's global step, each with the
    update size: its step begins at `on_before_optimizer_step`, after the closure's backward,
    not at the optimizer's pre-hook, which comes before the closure."""
    run_id = fit(ns, module_class(ns)())
    assert silent_reports(run_id) == []
    assert probe_steps(run_id) == {
        "optimizer/lr/0": [1, 11, 21],
        "optimizer/update_ratio_median": [1, 11, 21],
    }


def test_accumulation_samples_optimizer_steps(tmp_path: Path) -> None:
    """2 batches per optimizer step: samples at optimizer steps 1, 11, 21, no report."""
    ns = NAMESPACES[0]
    run_id = fit(ns, module_class(ns)(), accumulate_grad_batches=2)
    assert silent_reports(run_id) == []
    assert probe_steps(run_id)["optimizer/update_ratio_median"] == [1, 11, 21]


def test_optimizer_over_the_backbone_only_names_the_head(tmp_path: Path) -> None:
    ns = NAMESPACES[0]
    run_id = fit(ns, module_class(ns)(optimize="backbone"))
    assert report_types(run_id) == {"parameters_outside_optimizer": "warning"}
    message = silent_reports(run_id)[0]["message"]
    assert "head.weight" in message and "backbone" not in message, message


def test_validation_step_that_calls_train_is_reported(tmp_path: Path) -> None:
    """`self.train()` inside `validation_step`: the forward runs under inference_mode (no
    gradients) with dropout on, from the sanity check on."""
    ns = NAMESPACES[0]
    run_id = fit(ns, module_class(ns)(train_in_validation=True))
    assert report_types(run_id) == {"evaluation_in_train_mode": "warning"}


def test_two_optimizers_holding_half_each_are_not_probed(tmp_path: Path) -> None:
    """Neither optimizer holds the whole module: no probe (it would call the other's
    parameters left out), gradient capture still on, no report."""
    ns = NAMESPACES[0]
    run_id = fit(ns, gan_class(ns)(), max_steps=2 * STEPS, val_check_interval=None)
    assert silent_reports(run_id) == []
    assert probe_steps(run_id) == {"optimizer/lr/0": [], "optimizer/update_ratio_median": []}
    with QueryEngine(storage_path="./.tracer") as query:
        assert len(query.get_metric_history(run_id, "grad/global_norm")["steps"]) == 2 * STEPS


fabric_module = pytest.importorskip("lightning.fabric")


def fabric_train(another_copy: bool = False) -> str:
    """Fabric, STEPS optimizer steps of a dropout MLP; the optimizer built for a deep copy of
    the model when `another_copy`. The run's id."""
    logger = TracerFabricLogger(project="fabric", track_system_metrics=False, **ALL_SILENT_ON)
    torch.manual_seed(0)
    fabric = fabric_module.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 1),
    )
    optimized = copy.deepcopy(model) if another_copy else model
    optimizer = torch.optim.SGD(optimized.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)
    logger.watch(model, optimizer)
    for x, y in fabric.setup_dataloaders(loader(size=4 * STEPS)):
        fabric.backward(torch.nn.functional.mse_loss(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
        fabric.log_dict({"loss": 1.0})
    logger.finalize("success")
    assert logger.run is not None
    return logger.run.run_id


def test_fabric_healthy_loop_reports_nothing() -> None:
    run_id = fabric_train()
    assert silent_reports(run_id) == []
    assert probe_steps(run_id) == {
        "optimizer/lr/0": [1, 11, 21],
        "optimizer/update_ratio_median": [1, 11, 21],
    }


def test_fabric_optimizer_of_another_copy_is_critical() -> None:
    """None of the model's parameters is in the optimizer: one critical report says so
    (gradients_not_reset watches a parameter of the optimizer, so it has none to watch)."""
    run_id = fabric_train(another_copy=True)
    assert report_types(run_id) == {"parameters_outside_optimizer": "critical"}


def test_lightning_and_fabric_wrappers_unwrap_to_the_torch_optimizer() -> None:
    """What a LightningModule's `self.optimizers()` and Fabric's `setup` hand out."""
    from lightning.pytorch.core.optimizer import LightningOptimizer

    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    assert torch_optimizer(LightningOptimizer(optimizer)) is optimizer
    fabric = fabric_module.Fabric(accelerator="cpu", devices=1)
    _, wrapped = fabric.setup(model, optimizer)
    assert wrapped is not optimizer and torch_optimizer(wrapped) is optimizer
    assert torch_optimizer(optimizer) is optimizer and torch_optimizer(None) is None
