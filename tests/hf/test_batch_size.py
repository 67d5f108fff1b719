"""`auto_find_batch_size=True`: after an out-of-memory error HF (accelerate's
`find_executable_batch_size`) restarts training with a smaller batch inside the same
`trainer.train()` call, calling `on_train_begin` again. Tracer keeps one run, the retry
continuing it: no "failed" run is left beside it.

The out-of-memory error is provoked on CPU: a forward pre-hook raises the `RuntimeError`
CUDA's allocator raises ("CUDA out of memory."), which accelerate matches, for training
batches above 4 examples. From `per_device_train_batch_size=8` accelerate tries 8, 7, 6, 5
(each fails) and 4.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hf.helpers import (
    PROJECT,
    OutOfMemoryAbove,
    StopAtStep,
    make_trainer,
    only_run,
    strictly_increasing,
    tiny_model,
    tracer_callback,
)
from tracer.analysis import QueryEngine

MAX_STEPS = 12
FITS = 4  # the largest batch that "fits"
TRIED = [8, 7, 6, 5, 4]  # what accelerate tries from 8: int(0.9 * size) each time


@pytest.mark.parametrize("oom_step", [1, 3])
def test_a_retry_with_a_smaller_batch_continues_the_run(tmp_path: Path, oom_step: int) -> None:
    """Out of memory in optimizer step 1 (nothing trained yet), or in step 3 (after 2
    completed steps, which the retry trains again): one run, "finished" with no error,
    total_steps 12, each series stored once per step with the values of the training that
    completed (HF's own log history), one gradient capture per step, and the batch size
    found as the run summary's `train_batch_size`."""
    model = tiny_model()
    oom = OutOfMemoryAbove(model, FITS, from_step=oom_step)
    callback = tracer_callback()
    trainer = make_trainer(
        tmp_path / "out",
        [callback, oom],
        model=model,
        per_device_train_batch_size=TRIED[0],
        auto_find_batch_size=True,
        max_steps=MAX_STEPS,
    )
    trainer.train()
    assert oom.raised == len(TRIED) - 1
    assert sorted(set(oom.batch_sizes), reverse=True) == TRIED
    assert trainer.state.global_step == MAX_STEPS
    assert trainer.state.train_batch_size == FITS

    logged = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    assert callback.run is not None
    run_id = callback.run.run_id
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        summary = query.get_run_summary(run_id)
        loss = query.get_metric_history(run_id, "loss")
        grads = query.get_metric_history(run_id, "grad/global_norm")["steps"]
        evals = query.get_metric_history(run_id, "eval_loss")["steps"]
    assert run["run_id"] == run_id
    assert run["status"] == "finished"
    assert run["error"] is None
    assert run["total_steps"] == MAX_STEPS
    assert loss["steps"] == sorted(logged) == [2, 4, 6, 8, 10, 12]
    assert loss["values"] == pytest.approx([logged[s] for s in loss["steps"]])
    assert grads == list(range(1, MAX_STEPS + 1))
    assert evals == [4, 8, 12]
    assert strictly_increasing(grads)
    assert summary["summary"]["train_batch_size"] == FITS
    assert summary["config"]["training_args"]["auto_find_batch_size"] is True


def test_a_second_train_after_a_failed_one_is_not_taken_for_a_retry(tmp_path: Path) -> None:
    """With `auto_find_batch_size` on, a batch size no attempt fits in (the forward always
    runs out of memory) ends `train()` with accelerate's error; a second `train()` by the
    user with the same batch size is a new training: the first run ends "failed"."""
    model = tiny_model()
    oom = OutOfMemoryAbove(model, 0)
    callback = tracer_callback()
    trainer = make_trainer(
        tmp_path / "out",
        [callback, oom],
        model=model,
        per_device_train_batch_size=2,
        auto_find_batch_size=True,
        eval_strategy="no",
        save_strategy="no",
    )
    with pytest.raises(RuntimeError, match="No executable batch size found"):
        trainer.train()
    assert callback.run is not None
    first_id = callback.run.run_id

    oom.max_batch = 64
    trainer.train()
    with QueryEngine() as query:
        runs = {run["run_id"]: run for run in query.list_runs(PROJECT)}
    assert len(runs) == 2
    first = runs.pop(first_id)
    (second,) = runs.values()
    assert first["status"] == "failed"
    assert first["total_steps"] == 0
    assert second["status"] == "finished"
    assert second["total_steps"] == MAX_STEPS


def test_a_retry_of_a_resumed_training_is_still_one_run(tmp_path: Path) -> None:
    """Training resumed from a checkpoint (saved at step 8 with batch size 8) runs out of
    memory: HF reloads the checkpoint's state at each retry, batch size included, so the
    retry is not told apart from a new training; the checkpoint names the same run, which
    is resumed each time: one run, "finished" at step 12, no error."""
    output_dir = tmp_path / "out"
    first = tracer_callback()
    trainer = make_trainer(
        output_dir,
        [first, StopAtStep(8)],
        per_device_train_batch_size=TRIED[0],
        max_steps=MAX_STEPS,
    )
    trainer.train()
    assert first.run is not None

    model = tiny_model()
    oom = OutOfMemoryAbove(model, FITS)
    second = tracer_callback()
    resumed = make_trainer(
        output_dir,
        [second, oom],
        model=model,
        per_device_train_batch_size=TRIED[0],
        auto_find_batch_size=True,
        max_steps=MAX_STEPS,
    )
    resumed.train(resume_from_checkpoint=str(output_dir / "checkpoint-8"))
    assert oom.raised == len(TRIED) - 1
    assert resumed.state.global_step == MAX_STEPS
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss_steps = query.get_metric_history(run["run_id"], "loss")["steps"]
    assert run["run_id"] == first.run.run_id
    assert run["status"] == "finished"
    assert run["error"] is None
    assert run["total_steps"] == MAX_STEPS
    assert loss_steps == [2, 4, 6, 8, 10, 12]
