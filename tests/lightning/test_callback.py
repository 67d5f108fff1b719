"""`LightningCallback` under a real Lightning `Trainer`, in both namespaces.

With gradient accumulation, a validation loop and a step-based `ModelCheckpoint`: Tracer's
steps are Lightning's `global_step` (optimizer steps), gradients are captured once per
optimizer step and equal what Lightning's own `on_before_optimizer_step` sees, validation
metrics land at the step they were computed (none from the sanity check), checkpoints become
`model_saved` events, the module's hyperparameters are the run's config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.lightning.helpers import (
    NAMESPACES,
    PROJECT,
    make_trainer,
    namespace,
    only_run,
    reference_norm,
    tiny_module,
    tracer_callback,
)
from tracer.analysis import QueryEngine

MAX_STEPS = 12
ACCUMULATE = 2


def validation_steps_class(ns: str) -> type:
    pl = namespace(ns)

    class ValidationSteps(pl.Callback):  # type: ignore[misc,name-defined]
        """The global steps at which a real (not sanity-check) validation epoch ended."""

        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self.steps.append(trainer.global_step)

    return ValidationSteps


@pytest.mark.parametrize("ns", NAMESPACES)
def test_fit_with_accumulation_validation_and_checkpoints(ns: str, tmp_path: Path) -> None:
    """12 optimizer steps of 2 micro-batches: `train_loss` at steps 1..12, total_steps ==
    global_step, one `grad/global_norm` per optimizer step equal to a reference callback's
    norm, validation at the steps it ran (not at 0: the sanity check is skipped), each
    ModelCheckpoint save (every 3 steps, off the validation steps) a `model_saved` event at
    the step it was written, with an existing file; hparams in the config; status finished."""
    pl = namespace(ns)
    callback = tracer_callback()
    reference = reference_norm(ns)  # registered after ours
    validations = validation_steps_class(ns)()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpts"), every_n_train_steps=3, save_top_k=-1
    )
    trainer = make_trainer(
        ns,
        [callback, reference, validations, checkpoint],
        accumulate_grad_batches=ACCUMULATE,
        val_check_interval=8,  # training batches: every 4 optimizer steps
        enable_checkpointing=True,
        max_steps=MAX_STEPS,
    )
    model = tiny_module(ns, hidden=16, lr=0.05)
    trainer.fit(model)
    assert trainer.global_step == MAX_STEPS
    assert validations.steps, "no validation ran"

    with QueryEngine() as query:
        run = only_run(query.list_runs(), PROJECT)
        run_id = run["run_id"]
        summary = query.get_run_summary(run_id)
        loss = query.get_metric_history(run_id, "train_loss")
        val = query.get_metric_history(run_id, "val_loss")
        grad = query.get_metric_history(run_id, "grad/global_norm")
        saves = query.storage.get_events(run_id, "model_saved")
    assert summary["status"] == "finished"
    assert summary["total_steps"] == trainer.global_step == MAX_STEPS
    assert loss["steps"] == list(range(1, MAX_STEPS + 1))

    assert grad["steps"] == list(range(1, MAX_STEPS + 1))
    assert sorted(reference.norms) == grad["steps"]
    for step, value in zip(grad["steps"], grad["values"], strict=True):
        assert value == pytest.approx(reference.norms[step], rel=1e-5), step

    assert val["steps"] == validations.steps
    assert 0 not in val["steps"]

    saved = [(e["step"], e["data"]) for e in saves]
    assert [step for step, _ in saved] == [3, 6, 9, 12], saved
    for step, data in saved:
        path = next(v for k, v in data.items() if "path" in k)
        assert os.path.exists(path), (step, data)
        assert f"step={step}" in os.path.basename(path), (step, path)

    config = summary["config"]
    assert config["hidden"] == 16 and config["lr"] == 0.05


@pytest.mark.parametrize("ns", NAMESPACES)
def test_integrations_import_is_the_callback_of_both_namespaces(ns: str) -> None:
    """`tracer.integrations.LightningCallback` is tracer_lightning's class, and an instance
    is a `Callback` of both namespaces (so either namespace's Trainer accepts it)."""
    from tracer.integrations import LightningCallback, TracerLogger
    from tracer_lightning import LightningCallback as Direct
    from tracer_lightning import TracerLogger as DirectLogger

    assert LightningCallback is Direct
    assert TracerLogger is DirectLogger
    callback = LightningCallback(project="p")
    assert isinstance(callback, namespace(ns).Callback)
    assert isinstance(TracerLogger(project="p"), namespace(ns).loggers.Logger)


def test_unknown_setting_fails_at_the_call_site() -> None:
    """A misspelt TracerConfig setting raises in the constructor, before any Trainer."""
    from tracer_lightning import LightningCallback

    with pytest.raises(Exception, match=r"checkpoint_intervall"):
        LightningCallback(project="p", checkpoint_intervall=100)


def test_seed_api_example_verbatim() -> None:
    """The README's example, as written: `import pytorch_lightning as pl`, a Trainer with
    nothing but the callback, `trainer.fit(model)`. Only the model is this suite's: it stops
    itself after 5 steps (`stop_after`), else the default `max_epochs=1000` would run;
    Lightning's default logger and checkpointing write under the test's cwd."""
    import pytorch_lightning as pl

    from tracer.integrations import LightningCallback

    model = tiny_module("pytorch_lightning", stop_after=5)
    trainer = pl.Trainer(
        callbacks=[LightningCallback(project="my-project", checkpoint_interval=100)]
    )
    trainer.fit(model)

    with QueryEngine() as query:
        run = only_run(query.list_runs("my-project"))
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert trainer.global_step == 5
    assert run["status"] == "finished"
    assert run["total_steps"] == 5
    assert loss["steps"] == [1, 2, 3, 4, 5]
