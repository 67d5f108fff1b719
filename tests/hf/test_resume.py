"""Resuming a `transformers.Trainer` from a checkpoint continues the same Tracer run.

The first Trainer stops at step 8 (a job's time budget running out) right after saving
`checkpoint-8`; a new Trainer with a new callback, in the same output directory, resumes from
it with `trainer.train(resume_from_checkpoint=...)` and trains to step 12.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

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

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        history = {
            name: query.get_metric_history(run_id, name)["steps"]
            for name in (m["name"] for m in query.storage.list_metrics(run_id))
        }
        saves = [e["step"] for e in query.storage.get_events(run_id, "model_saved")]
    assert run["run_id"] == run_id
    assert run["status"] == "finished"
    assert run["total_steps"] == resumed.state.global_step == MAX_STEPS
    assert history["loss"] == [2, 4, 6, 8, 10, 12]
    assert history["eval_loss"] == [4, 8, 12]
    assert history["grad/global_norm"] == list(range(1, MAX_STEPS + 1))
    for name, steps in history.items():
        assert strictly_increasing(steps), (name, steps)
    assert saves == [4, 8, 12]
