"""What Lightning's own tests expect of every callback and logger, with Tracer's attached:
Trainers that pickle and copy after fit, console logging left where Lightning put it, stages
after fit stored, a version before the run starts, a dummy experiment off rank zero, and one
step numbering for the callback and the logger."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.lightning.helpers import (
    NAMESPACES,
    PROJECT,
    make_trainer,
    module_class,
    namespace,
    only_run,
    tiny_module,
    tracer_callback,
)
from tracer.analysis import QueryEngine
from tracer_lightning import TracerLogger

STEPS = 4
REPO = Path(__file__).resolve().parents[2]


def tracer_logger() -> TracerLogger:
    return TracerLogger(project=PROJECT, track_system_metrics=False)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_a_trainer_with_tracer_pickles_and_copies_after_fit(ns: str, tmp_path: Path) -> None:
    callback, logger = tracer_callback(), tracer_logger()
    trainer = make_trainer(ns, [callback], logger=logger, max_steps=STEPS)
    trainer.fit(tiny_module(ns))
    torch.save(trainer, tmp_path / "trainer.pt")
    copies = copy.deepcopy(trainer.callbacks)
    copied = next(c for c in copies if type(c) is type(callback))
    assert copied.run is None and copied.settings == callback.settings
    restored = pickle.loads(pickle.dumps(trainer))
    assert restored.logger.version == logger.version  # Lightning's logger pickling contract
    restored.logger.log_metrics({"acc": 1.0}, step=STEPS)  # the copy continues the same run
    restored.logger.finalize("success")
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        assert query.get_metric_history(run["run_id"], "acc")["steps"] == [STEPS]
    assert run["status"] == "finished" and run["total_steps"] == STEPS


CONSOLE = """
import logging
{first}
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
import lightning.pytorch as pl
{then}
pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
print("done")
"""


@pytest.mark.parametrize(
    "first, then",
    [
        ("import lightning.pytorch", "import tracer_lightning"),
        ("import tracer_lightning", ""),
    ],
)
def test_importing_tracer_leaves_lightnings_console_logging_alone(first: str, then: str) -> None:
    """Lightning's documented way to silence it still works with both namespaces installed:
    the Trainer's "GPU available" notice is not printed at level ERROR."""
    pytest.importorskip("pytorch_lightning")
    script = CONSOLE.format(first=first, then=then)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert "GPU available" not in result.stdout + result.stderr


@pytest.mark.parametrize("ns", NAMESPACES)
def test_fit_then_test_with_the_logger_stores_test_loss_in_the_fit_run(ns: str) -> None:
    logger = tracer_logger()
    trainer = make_trainer(ns, [], logger=logger, log_every_n_steps=1, max_steps=STEPS)
    module = tiny_module(ns)
    trainer.fit(module)
    trainer.test(module)
    trainer.validate(module)
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
        test = query.get_metric_history(run["run_id"], "test_loss")
        val = query.get_metric_history(run["run_id"], "val_loss")
    assert run["status"] == "finished" and run["total_steps"] == STEPS
    assert loss["steps"] == list(range(1, STEPS + 1))  # at global_step, as the callback
    assert test["steps"] == [STEPS] and STEPS in val["steps"]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_fit_then_test_with_the_callback_stores_test_loss_in_the_fit_run(ns: str) -> None:
    callback = tracer_callback()
    trainer = make_trainer(ns, [callback], max_steps=STEPS)
    module = tiny_module(ns)
    trainer.fit(module)
    trainer.test(module)
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        test = query.get_metric_history(run["run_id"], "test_loss")
    assert run["status"] == "finished" and run["total_steps"] == STEPS
    assert test["steps"] == [STEPS]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_validate_and_test_without_fit_make_a_run_that_names_its_stage(ns: str) -> None:
    callback = tracer_callback()
    trainer = make_trainer(ns, [callback])
    module = tiny_module(ns)
    trainer.validate(module)
    trainer.test(module)  # the same Trainer and weights: the validate run continues
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        val = query.get_metric_history(run["run_id"], "val_loss")
        test = query.get_metric_history(run["run_id"], "test_loss")
    assert run["config"]["stage"] == "validate" and run["status"] == "finished"
    assert val["steps"] == [0] and test["steps"] == [0]


def test_a_second_fit_continues_the_run_and_a_failed_run_is_never_continued() -> None:
    ns = "lightning.pytorch"
    callback = tracer_callback()
    trainer = make_trainer(ns, [callback], max_steps=STEPS)
    module = tiny_module(ns)
    trainer.fit(module)
    trainer.fit_loop.epoch_loop.max_steps = 2 * STEPS
    trainer.fit(module)
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert run["total_steps"] == 2 * STEPS and loss["steps"] == list(range(1, 2 * STEPS + 1))

    failing = tracer_callback(run_name="failing")
    broken = tiny_module(ns, raise_at=2)
    with pytest.raises(RuntimeError):
        make_trainer(ns, [failing], max_steps=STEPS).fit(broken)
    make_trainer(ns, [failing]).test(broken)
    with QueryEngine() as query:
        runs = {r["run_name"]: r for r in query.list_runs(PROJECT)}
    failed = runs["failing"]
    assert (failed["status"], failed["total_steps"]) == ("failed", 1)  # the steps done
    (tested,) = [r for r in runs.values() if r["config"].get("stage") == "test"]
    assert tested["status"] == "finished"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_checkpoints_go_to_the_runs_own_version_folder(ns: str, tmp_path: Path) -> None:
    versions = []
    for _ in range(2):
        logger = tracer_logger()
        trainer = make_trainer(
            ns,
            [],
            logger=logger,
            max_steps=2,
            enable_checkpointing=True,
            default_root_dir=str(tmp_path),
        )
        trainer.fit(tiny_module(ns))
        versions.append(logger.version)
        (saved,) = (tmp_path / PROJECT / logger.version / "checkpoints").glob("*.ckpt")
        assert saved.exists()
    with QueryEngine() as query:
        stored = sorted(r["run_id"] for r in query.list_runs(PROJECT))
    assert stored == sorted(versions) and len(set(versions)) == 2


def test_experiment_off_rank_zero_is_lightnings_dummy() -> None:
    from lightning_utilities.core.rank_zero import rank_zero_only

    logger = tracer_logger()
    rank: Any = getattr(rank_zero_only, "rank", 0)
    rank_zero_only.rank = 1  # type: ignore[attr-defined]
    try:
        experiment = logger.experiment
        assert experiment is not None
        experiment.log({"loss": 1.0})  # any call is a no-op
        logger.log_metrics({"loss": 1.0}, step=1)
    finally:
        rank_zero_only.rank = rank  # type: ignore[attr-defined]
    assert logger.run is None


def test_callback_and_logger_on_one_trainer_share_the_id_given_to_checkpoints(
    tmp_path: Path,
) -> None:
    ns = "lightning.pytorch"
    logger, callback = tracer_logger(), tracer_callback()
    planned = logger.version
    trainer = make_trainer(
        ns,
        [callback, namespace(ns).callbacks.ModelCheckpoint()],
        logger=logger,
        max_steps=2,
        enable_checkpointing=True,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(tiny_module(ns))
    assert callback.run is not None and callback.run.run_id == planned == logger.version
    assert list((tmp_path / PROJECT / planned / "checkpoints").glob("*.ckpt"))


def test_the_integration_script_runs_with_lightnings_defaults(tmp_path: Path) -> None:
    """Trainer defaults (progress bar, summary, checkpointing) and both adapters: no error."""
    script = textwrap.dedent("""
        import torch
        from tests.lightning.helpers import make_trainer, tiny_module, tracer_callback
        from tracer_lightning import TracerLogger
        torch.set_num_threads(1)
        trainer = make_trainer(
            "lightning.pytorch", [tracer_callback()], max_steps=3,
            logger=TracerLogger(project="lightning"), enable_progress_bar=True,
            enable_model_summary=True, enable_checkpointing=True,
        )
        trainer.fit(tiny_module("lightning.pytorch"))
        trainer.test(tiny_module("lightning.pytorch"))
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_a_resume_that_fails_before_its_first_step_leaves_the_run_as_it_was(
    tmp_path: Path,
) -> None:
    """Found by Lightning's own tests with Tracer attached: `fit(ckpt_path=...)` that raises
    while restoring (the last checkpoint of 3 epochs under `max_epochs=1`) turned the finished run
    "failed" and lowered its total_steps to the checkpoint's."""
    ns = "lightning.pytorch"
    pl = namespace(ns)
    first = tracer_callback()
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpts"), save_last=True)
    trainer = make_trainer(
        ns,
        [first, saver],
        max_steps=-1,
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=0,
        enable_checkpointing=True,
    )
    trainer.fit(tiny_module(ns))
    second = tracer_callback()
    again = make_trainer(ns, [second], max_steps=-1, max_epochs=1, limit_train_batches=2)
    with pytest.raises(Exception, match="max_epochs=1"):
        again.fit(tiny_module(ns), ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert second.run is not None and second.run.run_id == run["run_id"]
    assert (run["status"], run["total_steps"], run["error"]) == ("finished", 6, None)


def test_an_error_in_the_modules_own_fit_end_fails_the_run() -> None:
    """Lightning calls the module's `on_fit_end` after the callbacks'; when it raises, `fit`
    raises and the run must not read "finished"."""
    ns = "lightning.pytorch"

    class Troubled(module_class(ns)):  # type: ignore[misc]
        def on_fit_end(self) -> None:
            raise RuntimeError("Trouble!")

    callback = tracer_callback()
    with pytest.raises(RuntimeError, match="Trouble!"):
        make_trainer(ns, [callback], max_steps=STEPS).fit(Troubled())
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert (run["status"], run["error"]) == ("failed", "RuntimeError: Trouble!")
    assert run["total_steps"] == STEPS
