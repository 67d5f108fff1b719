"""Resuming from a Lightning checkpoint continues the same Tracer run.

The callback's state (the run id) is saved in every Lightning checkpoint; a NEW Trainer with a
NEW `LightningCallback` and `fit(model, ckpt_path=...)` reopens that run: one run in the
project, metric steps continuing from the checkpoint's global step, total_steps the final one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lightning.helpers import (
    NAMESPACES,
    PROJECT,
    make_trainer,
    namespace,
    only_run,
    strictly_increasing,
    tiny_module,
    tracer_callback,
)
from tracer.analysis import QueryEngine

FIRST_STEPS = 6
FINAL_STEPS = 12


@pytest.mark.parametrize("ns", NAMESPACES)
def test_new_trainer_resumes_the_run_from_a_model_checkpoint(ns: str, tmp_path: Path) -> None:
    """Fit 6 steps with a ModelCheckpoint every 3; a new Trainer and callback resume from the
    step-6 checkpoint to step 12: the same run id, one run, `train_loss` and
    `grad/global_norm` at steps 1..12 each once, status finished, total_steps 12."""
    pl = namespace(ns)
    first = tracer_callback()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpts"), every_n_train_steps=3, save_top_k=-1
    )
    trainer = make_trainer(
        ns, [first, checkpoint], max_steps=FIRST_STEPS, enable_checkpointing=True
    )
    trainer.fit(tiny_module(ns))
    assert first.run is not None
    run_id = first.run.run_id
    path = tmp_path / "ckpts" / f"epoch=0-step={FIRST_STEPS}.ckpt"
    assert path.exists(), sorted(p.name for p in (tmp_path / "ckpts").iterdir())

    second = tracer_callback()
    resumed = make_trainer(ns, [second], max_steps=FINAL_STEPS)
    resumed.fit(tiny_module(ns), ckpt_path=str(path))
    assert second.run is not None and second.run.run_id == run_id
    assert resumed.global_step == FINAL_STEPS

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run_id, "train_loss")
        grad = query.get_metric_history(run_id, "grad/global_norm")
    assert run["run_id"] == run_id
    assert run["status"] == "finished"
    assert run["total_steps"] == FINAL_STEPS
    assert loss["steps"] == list(range(1, FINAL_STEPS + 1))
    assert grad["steps"] == list(range(1, FINAL_STEPS + 1))


@pytest.mark.parametrize("ns", NAMESPACES)
def test_resume_after_a_crash_continues_the_failed_run(ns: str, tmp_path: Path) -> None:
    """A fit saving `trainer.save_checkpoint` state at step 4 then crashing at step 7 leaves a
    failed run; a new Trainer resuming from the step-4 file continues that run to the end:
    one run, finished, steps strictly increasing up to 10 (the replayed steps 5-6 written
    once)."""
    pl = namespace(ns)

    class SaveAt(pl.Callback):  # type: ignore[misc,name-defined]
        def on_train_batch_end(self, trainer: object, *args: object) -> None:
            if trainer.global_step == 4 and not (tmp_path / "mid.ckpt").exists():  # type: ignore[attr-defined]
                trainer.save_checkpoint(str(tmp_path / "mid.ckpt"))  # type: ignore[attr-defined]

    first = tracer_callback()
    trainer = make_trainer(ns, [first, SaveAt()], max_steps=10)
    with pytest.raises(RuntimeError):
        trainer.fit(tiny_module(ns, raise_at=7))
    assert first.run is not None
    run_id = first.run.run_id
    with QueryEngine() as query:
        assert only_run(query.list_runs(PROJECT))["status"] == "failed"

    second = tracer_callback()
    resumed = make_trainer(ns, [second], max_steps=10)
    resumed.fit(tiny_module(ns), ckpt_path=str(tmp_path / "mid.ckpt"))
    assert second.run is not None and second.run.run_id == run_id

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run_id, "train_loss")
    assert run["status"] == "finished"
    assert run["total_steps"] == 10
    assert strictly_increasing(loss["steps"])
    assert loss["steps"] == list(range(1, 11))


def test_a_logger_and_callback_pair_resumes_the_saved_run(tmp_path: Path) -> None:
    """With a TracerLogger on the Trainer too, the logger does not start a run of its own
    before the callback has read the run id from the checkpoint: still one run, resumed."""
    from tracer_lightning import TracerLogger

    ns = "lightning.pytorch"
    first = tracer_callback()
    trainer = make_trainer(ns, [first], logger=TracerLogger(project=PROJECT), max_steps=FIRST_STEPS)
    trainer.fit(tiny_module(ns))
    assert first.run is not None
    path = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(str(path))

    second = tracer_callback()
    resumed = make_trainer(
        ns, [second], logger=TracerLogger(project=PROJECT), max_steps=FINAL_STEPS
    )
    resumed.fit(tiny_module(ns), ckpt_path=str(path))
    assert second.run is not None and second.run.run_id == first.run.run_id
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert run["status"] == "finished" and run["total_steps"] == FINAL_STEPS
    assert strictly_increasing(loss["steps"]) and loss["steps"][-1] == FINAL_STEPS


@pytest.mark.parametrize("ns", NAMESPACES)
def test_resume_from_an_earlier_checkpoint_drops_the_abandoned_steps(
    ns: str, tmp_path: Path
) -> None:
    """Fit to step 12 saving every 3 steps, then resume from the step-3 checkpoint and stop
    at 6: the run's series end at 6, each step once; the first fit's 7-12 are gone."""
    pl = namespace(ns)
    first = tracer_callback()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpts"), every_n_train_steps=3, save_top_k=-1
    )
    make_trainer(ns, [first, checkpoint], max_steps=FINAL_STEPS, enable_checkpointing=True).fit(
        tiny_module(ns)
    )
    assert first.run is not None
    run_id = first.run.run_id

    second = tracer_callback()
    resumed = make_trainer(ns, [second], max_steps=FIRST_STEPS)
    resumed.fit(tiny_module(ns), ckpt_path=str(tmp_path / "ckpts" / "epoch=0-step=3.ckpt"))
    assert second.run is not None and second.run.run_id == run_id
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss = query.get_metric_history(run_id, "train_loss")
        grad = query.get_metric_history(run_id, "grad/global_norm")
    assert (run["status"], run["total_steps"]) == ("finished", FIRST_STEPS)
    assert loss["steps"] == list(range(1, FIRST_STEPS + 1))
    assert grad["steps"] == list(range(1, FIRST_STEPS + 1))
