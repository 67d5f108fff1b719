"""`TracerLogger`: `Trainer(logger=TracerLogger(...))` routes `self.log` into a Tracer run; with
a `LightningCallback` on the same Trainer both write ONE run."""

from __future__ import annotations

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
    tiny_module,
    tracer_callback,
)
from tracer.analysis import QueryEngine
from tracer_lightning import TracerLogger

MAX_STEPS = 8


def logged_steps_class(ns: str) -> type:
    pl = namespace(ns)

    class LoggedSteps(pl.loggers.Logger):  # type: ignore[misc,name-defined]
        """A second logger recording the steps Lightning passes to `log_metrics`."""

        def __init__(self) -> None:
            super().__init__()
            self.steps: dict[str, list[int]] = {}

        @property
        def name(self) -> str:
            return "steps"

        @property
        def version(self) -> str:
            return "0"

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, Any], step: Any = None) -> None:
            for key in metrics:
                self.steps.setdefault(key, []).append(step)

    return LoggedSteps


@pytest.mark.parametrize("ns", NAMESPACES)
def test_logger_alone_routes_self_log_into_a_run(ns: str) -> None:
    """`logger=[TracerLogger, recorder]`, `log_every_n_steps=1`: `train_loss` is stored at
    `global_step`, one past the 0-based step Lightning passes to loggers (the numbering of the
    callback and of gradient capture), and `finalize` ends the run "finished"."""
    tracer_logger = TracerLogger(project=PROJECT, track_system_metrics=False)
    recorder = logged_steps_class(ns)()
    trainer = make_trainer(
        ns, [], logger=[tracer_logger, recorder], log_every_n_steps=1, max_steps=MAX_STEPS
    )
    trainer.fit(tiny_module(ns))
    assert tracer_logger.run is not None

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert run["run_id"] == tracer_logger.version
    assert run["status"] == "finished"
    assert recorder.steps["train_loss"], recorder.steps
    assert loss["steps"] == [step + 1 for step in sorted(set(recorder.steps["train_loss"]))]
    assert loss["steps"] == list(range(1, MAX_STEPS + 1))
    assert run["total_steps"] == MAX_STEPS


def test_logger_alone_stores_the_hyperparameters() -> None:
    """The module's `save_hyperparameters` reach the run's config with the logger alone."""
    tracer_logger = TracerLogger(project=PROJECT, track_system_metrics=False)
    trainer = make_trainer("lightning.pytorch", [], logger=tracer_logger, max_steps=2)
    trainer.fit(tiny_module("lightning.pytorch", hidden=12))
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert run["config"].get("hidden") == 12


@pytest.mark.parametrize("ns", NAMESPACES)
def test_logger_alone_as_the_only_logger(ns: str) -> None:
    """`Trainer(logger=TracerLogger(project=...))` with Lightning's default logging interval:
    one finished run holding `train_loss` (steps as Lightning passes them: every 50 steps by
    default, so at least one point in 60 steps)."""
    tracer_logger = TracerLogger(project=PROJECT, track_system_metrics=False)
    trainer = make_trainer(ns, [], logger=tracer_logger, max_steps=60)
    trainer.fit(tiny_module(ns))
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert run["status"] == "finished"
    assert loss["steps"] and all(0 <= s <= 60 for s in loss["steps"])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_logger_alone_stores_a_fit_that_logged_nothing_yet(ns: str) -> None:
    """A module without `save_hyperparameters` (no `log_hyperparams`) in a fit shorter than
    `log_every_n_steps` (no `log_metrics`): the fit is still a finished run with its steps, in
    the folder Lightning named after the logger's version."""
    pl = namespace(ns)

    class Bare(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(FEATURES, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    tracer_logger = TracerLogger(project=PROJECT, track_system_metrics=False)
    trainer = make_trainer(ns, [], logger=tracer_logger, max_steps=5, enable_checkpointing=True)
    trainer.fit(Bare(), loader(64))
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert run["run_id"] == tracer_logger.version
    assert (run["status"], run["total_steps"]) == ("finished", 5)
    assert [p.name for p in Path(PROJECT, run["run_id"], "checkpoints").iterdir()]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_callback_and_logger_on_one_trainer_write_one_run(ns: str) -> None:
    """Both on one Trainer: ONE run in the project (the callback's), holding the callback's
    per-step metrics and gradients; finished once."""
    tracer_logger = TracerLogger(project=PROJECT, track_system_metrics=False)
    callback = tracer_callback()
    trainer = make_trainer(
        ns, [callback], logger=tracer_logger, log_every_n_steps=1, max_steps=MAX_STEPS
    )
    trainer.fit(tiny_module(ns))
    assert callback.run is not None and tracer_logger.run is callback.run

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
        grad = query.get_metric_history(run["run_id"], "grad/global_norm")
    assert run["status"] == "finished"
    assert run["total_steps"] == MAX_STEPS
    assert loss["steps"] == list(range(1, MAX_STEPS + 1))
    assert grad["steps"] == list(range(1, MAX_STEPS + 1))
