"""Resuming a `transformers.Trainer` from a checkpoint continues the same Tracer run.

The first Trainer stops at step 8 (a job's time budget running out) right after saving
`checkpoint-8`; a new Trainer with a new callback resumes from it with
`trainer.train(resume_from_checkpoint=...)` and trains to step 12: in the same output
directory, or from a checkpoint moved out of it (the run id travels in the checkpoint's
`trainer_state.json`, which HF loads), and when HF rebuilds the callbacks from the checkpoint
(`restore_callback_states_from_checkpoint`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Union

import pytest

from tests.hf.helpers import (
    PROJECT,
    StopAtStep,
    make_trainer,
    only_run,
    strictly_increasing,
    tracer_callback,
)
from tracer.analysis import QueryEngine
from tracer_hf import TransformersCallback
from tracer_hf.checkpoints import RUN_FILE

STOP_STEP = 8
MAX_STEPS = 12


@pytest.mark.parametrize("how", ["path", "latest"])
def test_resume_from_checkpoint_continues_the_same_run(tmp_path: Path, how: str) -> None:
    """Same run id, one run in the project, metric steps past the checkpoint's step continue
    the first part's without a repeat, one gradient capture per step 1..12 across both
    parts, total_steps == the final global_step, and the run ends "finished"."""
    output_dir = tmp_path / "out"
    first = tracer_callback()
    trainer = make_trainer(output_dir, [first, StopAtStep(STOP_STEP)], max_steps=MAX_STEPS)
    trainer.train()
    assert trainer.state.global_step == STOP_STEP
    assert first.run is not None
    run_id = first.run.run_id
    checkpoint = output_dir / f"checkpoint-{STOP_STEP}"
    assert checkpoint.is_dir()

    second = tracer_callback()
    resumed = make_trainer(output_dir, [second], max_steps=MAX_STEPS)
    target: Union[str, bool] = str(checkpoint) if how == "path" else True
    resumed.train(resume_from_checkpoint=target)
    assert resumed.state.global_step == MAX_STEPS
    assert second.run is not None and second.run.run_id == run_id

    assert_one_continued_run(run_id)


def assert_one_continued_run(run_id: str) -> None:
    """One run in the project, `run_id`, finished at step 12, its series continuing across
    the resume without a repeat, and one gradient capture per step 1..12."""
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        history = {
            name: query.get_metric_history(run_id, name)["steps"]
            for name in (m["name"] for m in query.storage.list_metrics(run_id))
        }
        saves = [e["step"] for e in query.storage.get_events(run_id, "model_saved")]
    assert run["run_id"] == run_id
    assert run["status"] == "finished"
    assert run["total_steps"] == MAX_STEPS
    assert history["loss"] == [2, 4, 6, 8, 10, 12]
    assert history["eval_loss"] == [4, 8, 12]
    assert history["grad/global_norm"] == list(range(1, MAX_STEPS + 1))
    for name, steps in history.items():
        assert strictly_increasing(steps), (name, steps)
    assert saves == [4, 8, 12]


def stop_at_checkpoint(output_dir: Path) -> tuple[str, Path]:
    """Train the first part (steps 1..8, saving checkpoint-8); (its run id, the checkpoint)."""
    first = tracer_callback()
    trainer = make_trainer(output_dir, [first, StopAtStep(STOP_STEP)], max_steps=MAX_STEPS)
    trainer.train()
    assert trainer.state.global_step == STOP_STEP
    assert first.run is not None
    checkpoint = output_dir / f"checkpoint-{STOP_STEP}"
    assert checkpoint.is_dir()
    return first.run.run_id, checkpoint


@pytest.mark.parametrize("run_file", ["kept", "removed"])
def test_resume_from_a_checkpoint_outside_output_dir_continues_the_run(
    tmp_path: Path, run_file: str
) -> None:
    """The checkpoint is moved out of the first output directory (a job that keeps its
    checkpoints elsewhere) and the second Trainer writes to another output directory:
    `train(resume_from_checkpoint=<moved path>)` sets no `args.resume_from_checkpoint`, yet
    the same run continues, also when the checkpoint has lost its `tracer_run.json` (the id
    is in `trainer_state.json`)."""
    run_id, checkpoint = stop_at_checkpoint(tmp_path / "first")
    moved = tmp_path / "kept-checkpoints" / "step-8"
    moved.parent.mkdir()
    shutil.move(str(checkpoint), str(moved))
    if run_file == "removed":
        (moved / RUN_FILE).unlink()

    second = tracer_callback()
    resumed = make_trainer(tmp_path / "second", [second], max_steps=MAX_STEPS)
    resumed.train(resume_from_checkpoint=str(moved))
    assert resumed.args.resume_from_checkpoint is None  # train() does not set it
    assert resumed.state.global_step == MAX_STEPS
    assert second.run is not None and second.run.run_id == run_id
    assert_one_continued_run(run_id)


def test_callbacks_rebuilt_from_the_checkpoint_continue_the_run(tmp_path: Path) -> None:
    """With `restore_callback_states_from_checkpoint=True`, HF replaces the callback passed
    to the Trainer by one built from the checkpoint's `trainer_state.json`: that one has the
    same settings and continues the same run."""
    output_dir = tmp_path / "out"
    run_id, checkpoint = stop_at_checkpoint(output_dir)

    passed = tracer_callback()
    resumed = make_trainer(
        output_dir, [passed], max_steps=MAX_STEPS, restore_callback_states_from_checkpoint=True
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    rebuilt = [
        cb for cb in resumed.callback_handler.callbacks if isinstance(cb, TransformersCallback)
    ]
    assert len(rebuilt) == 1 and rebuilt[0] is not passed
    assert rebuilt[0].settings == passed.settings
    assert rebuilt[0].run is not None and rebuilt[0].run.run_id == run_id
    assert_one_continued_run(run_id)


def test_resume_from_a_checkpoint_saved_without_tracer_starts_a_run(tmp_path: Path) -> None:
    """A checkpoint written by a Trainer without Tracer's callback holds no run id: the
    resumed training is a new run, from step 8 to 12, and saving its checkpoints works
    (HF updates the saved state of every stateful callback it knows of)."""
    output_dir = tmp_path / "out"
    untraced = make_trainer(output_dir, [StopAtStep(STOP_STEP)], max_steps=MAX_STEPS)
    untraced.train()
    checkpoint = output_dir / f"checkpoint-{STOP_STEP}"

    callback = tracer_callback()
    resumed = make_trainer(output_dir, [callback], max_steps=MAX_STEPS)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == MAX_STEPS
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss_steps = query.get_metric_history(run["run_id"], "loss")["steps"]
    assert run["status"] == "finished"
    assert loss_steps == [10, 12]
    saved: Any = json.loads(
        (output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text()
    )
    assert (
        saved["stateful_callbacks"]["TransformersCallback"]["tracer_run"]["run_id"]
        == (run["run_id"])
    )


def test_a_checkpoint_whose_run_is_not_stored_here_starts_a_run(tmp_path: Path) -> None:
    """The checkpoint names a run of another storage (it was made on another machine, or
    with another `storage_path`): resuming from it starts a new run there instead of
    failing the training."""
    output_dir = tmp_path / "out"
    first = tracer_callback(storage_path=str(tmp_path / "elsewhere"))
    trainer = make_trainer(output_dir, [first, StopAtStep(STOP_STEP)], max_steps=MAX_STEPS)
    trainer.train()
    assert first.run is not None

    second = tracer_callback()
    resumed = make_trainer(output_dir, [second], max_steps=MAX_STEPS)
    resumed.train(resume_from_checkpoint=str(output_dir / f"checkpoint-{STOP_STEP}"))
    assert second.run is not None and second.run.run_id != first.run.run_id
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    assert run["status"] == "finished"
    assert run["total_steps"] == MAX_STEPS


def test_resume_from_an_earlier_checkpoint_drops_the_abandoned_steps(tmp_path: Path) -> None:
    """Found by transformers' own checkpointing tests with Tracer attached: training to step
    12, then resuming from `checkpoint-4` and stopping at 8 left the first training's steps
    9-12 in the continued run. What the run stored after the checkpoint's step is now
    dropped when training resumes from it: every series ends at 8, each step once."""
    output_dir = tmp_path / "out"
    first = tracer_callback()
    make_trainer(output_dir, [first], max_steps=MAX_STEPS).train()
    assert first.run is not None
    run_id = first.run.run_id

    second = tracer_callback()
    resumed = make_trainer(output_dir, [second, StopAtStep(STOP_STEP)], max_steps=MAX_STEPS)
    resumed.train(resume_from_checkpoint=str(output_dir / "checkpoint-4"))
    assert second.run is not None and second.run.run_id == run_id
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        history = {
            name: query.get_metric_history(run_id, name)["steps"]
            for name in (m["name"] for m in query.storage.list_metrics(run_id))
        }
        checkpoints = [c["step"] for c in query.storage.get_checkpoints(run_id)]
    assert run["total_steps"] == STOP_STEP
    assert history["grad/global_norm"] == list(range(1, STOP_STEP + 1))
    assert history["loss"] == [2, 4, 6, 8]
    assert all(max(steps) <= STOP_STEP for steps in history.values()), history
    assert max(checkpoints) <= STOP_STEP


def test_a_webhook_url_is_not_saved_in_checkpoints(tmp_path: Path) -> None:
    """The callback's settings go into every checkpoint's trainer_state.json, which gets
    copied around: the webhook URL (a secret) stays out of it."""
    secret = "hooks/T0/B0/never-in-a-checkpoint"
    callback = tracer_callback(webhook_url=f"http://127.0.0.1:9/{secret}")
    trainer = make_trainer(tmp_path / "out", [callback], max_steps=4)
    trainer.train()
    state = (tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text()
    saved: Any = json.loads(state)
    args = saved["stateful_callbacks"]["TransformersCallback"]["args"]
    assert "webhook_url" not in args and args["project"] == PROJECT
    assert secret not in state
