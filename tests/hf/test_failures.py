"""An exception inside `trainer.train()`: HF has no exception event, so Tracer must not call
the run "finished". In-process the run stays open (status "running") until a second
`train()` on the same callback ends it as "failed"; in a process where the exception is
uncaught, the run ends "failed" with the error, and in one that catches it and exits, the
run ends "failed" at exit. However it ends, `total_steps` is the number of optimizer steps
the Trainer completed (its `global_step`), not the step that was being trained.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hf.helpers import (
    PROJECT,
    CrashForwardAtStep,
    RaiseAtStep,
    make_trainer,
    only_run,
    tiny_model,
    tracer_callback,
)
from tracer.analysis import QueryEngine

RAISE_STEP = 5
CRASH_STEP = 3  # the forward raises in optimizer step 3: 2 steps completed
CHILD_TIMEOUT_S = 180.0


def test_exception_inside_train_does_not_finish_the_run(tmp_path: Path) -> None:
    """A callback raising at step 5 propagates out of `trainer.train()`; the run is left
    "running" (not "finished"), with the steps trained so far, and still open."""
    callback = tracer_callback()
    trainer = make_trainer(tmp_path / "out", [callback, RaiseAtStep(RAISE_STEP)])
    with pytest.raises(RuntimeError, match=f"boom at step {RAISE_STEP}"):
        trainer.train()
    assert trainer.state.global_step == RAISE_STEP
    assert callback.run is not None and callback.run.state == "active"
    callback.run.flush()
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        loss_steps = query.get_metric_history(run["run_id"], "loss")["steps"]
    assert run["status"] == "running"
    assert run["end_time"] is None
    assert loss_steps == [2, 4]


def test_second_train_ends_the_first_run_as_failed(tmp_path: Path) -> None:
    """After the exception, `trainer.train()` again with the same callback ends the first run
    as "failed" (saying why) and traces the new training as a second, finished run."""
    callback = tracer_callback()
    raiser = RaiseAtStep(RAISE_STEP)
    trainer = make_trainer(
        tmp_path / "out", [callback, raiser], eval_strategy="no", save_strategy="no"
    )
    with pytest.raises(RuntimeError):
        trainer.train()
    assert callback.run is not None
    first_id = callback.run.run_id

    trainer.remove_callback(raiser)
    trainer.train()
    assert callback.run.run_id != first_id
    with QueryEngine() as query:
        runs = {run["run_id"]: run for run in query.list_runs(PROJECT)}
    assert len(runs) == 2
    first = runs.pop(first_id)
    (second,) = runs.values()
    assert first["status"] == "failed"
    assert first["error"] is not None and "trainer.train()" in first["error"]
    assert first["total_steps"] == RAISE_STEP  # raised after step 5 completed
    assert second["status"] == "finished"
    assert second["total_steps"] == trainer.state.global_step == 12


def test_a_crash_in_the_forward_stores_the_completed_steps(tmp_path: Path) -> None:
    """The model's forward raises in optimizer step 3, so 2 steps were completed: the run,
    ended "failed" by the next `train()` on the callback, stores total_steps 2 (the
    Trainer's `global_step`), not 3 (the step being trained when it crashed)."""
    model = tiny_model()
    crasher = CrashForwardAtStep(model, CRASH_STEP)
    callback = tracer_callback()
    trainer = make_trainer(
        tmp_path / "out", [callback, crasher], model=model, eval_strategy="no", save_strategy="no"
    )
    with pytest.raises(RuntimeError, match=f"forward failed in step {CRASH_STEP}"):
        trainer.train()
    assert trainer.state.global_step == CRASH_STEP - 1
    assert callback.run is not None
    crashed_id = callback.run.run_id

    crasher.step = -1  # the next training runs through
    trainer.train()
    with QueryEngine() as query:
        crashed = query.storage.get_run(crashed_id)
        loss_steps = query.get_metric_history(crashed_id, "loss")["steps"]
    assert crashed is not None
    assert crashed["status"] == "failed"
    assert crashed["total_steps"] == CRASH_STEP - 1
    assert loss_steps == [2]


UNCAUGHT = """
    import sys
    import torch
    from tests.hf.helpers import RaiseAtStep, make_trainer, tracer_callback

    torch.set_num_threads(1)
    trainer = make_trainer(
        "out",
        [tracer_callback(), RaiseAtStep(int(sys.argv[1]))],
        eval_strategy="no",
        save_strategy="no",
    )
    trainer.train()
    print("unreachable")
"""


@pytest.mark.slow
def test_uncaught_exception_in_a_process_marks_the_run_failed(tmp_path: Path) -> None:
    """A training script whose `trainer.train()` raises, uncaught: the process exits 1 with
    the traceback, and the run is "failed" with the exception's type and message."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(UNCAUGHT))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("TRACER_STORAGE_PATH", None)
    env.pop("TRACER_MODE", None)
    finished = subprocess.run(
        [sys.executable, str(script), str(RAISE_STEP)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert finished.returncode == 1, finished.stderr[-3000:]
    assert f"RuntimeError: boom at step {RAISE_STEP}" in finished.stderr
    assert "unreachable" not in finished.stdout

    with QueryEngine(str(tmp_path / ".tracer")) as query:
        run = only_run(query.list_runs(PROJECT))
        loss_steps = query.get_metric_history(run["run_id"], "loss")["steps"]
        grad_steps = query.get_metric_history(run["run_id"], "grad/global_norm")["steps"]
    assert run["status"] == "failed"
    assert run["error"] is not None
    assert f"RuntimeError: boom at step {RAISE_STEP}" in run["error"]
    assert run["end_time"] is not None
    assert loss_steps == [2, 4]
    assert grad_steps == list(range(1, RAISE_STEP + 1))  # the crashed step's capture too
    assert run["total_steps"] == RAISE_STEP


FORWARD_CRASH = """
    import sys
    import torch
    from tests.hf.helpers import CrashForwardAtStep, make_trainer, tiny_model, tracer_callback

    torch.set_num_threads(1)
    mode, step = sys.argv[1], int(sys.argv[2])
    model = tiny_model()
    trainer = make_trainer(
        "out",
        [tracer_callback(), CrashForwardAtStep(model, step)],
        model=model,
        eval_strategy="no",
        save_strategy="no",
    )
    if mode == "uncaught":
        trainer.train()
    else:
        try:
            trainer.train()
        except RuntimeError as error:
            print("caught:", error)
    print("global_step", trainer.state.global_step)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uncaught", "caught"])
def test_a_crashed_process_stores_failed_with_the_completed_steps(
    tmp_path: Path, mode: str
) -> None:
    """A training process whose model forward raises in optimizer step 3: uncaught (exit 1,
    the excepthook ends the run with the error) or caught by the script (exit 0, the run
    is ended at exit). Either way, once the process has exited the stored run is "failed",
    with total_steps 2, the optimizer steps completed, and an end time."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(FORWARD_CRASH))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("TRACER_STORAGE_PATH", None)
    env.pop("TRACER_MODE", None)
    finished = subprocess.run(
        [sys.executable, str(script), mode, str(CRASH_STEP)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    message = f"forward failed in step {CRASH_STEP}"
    if mode == "uncaught":
        assert finished.returncode == 1, finished.stderr[-3000:]
        assert f"RuntimeError: {message}" in finished.stderr
    else:
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert f"caught: {message}" in finished.stdout
        assert f"global_step {CRASH_STEP - 1}" in finished.stdout

    with QueryEngine(str(tmp_path / ".tracer")) as query:
        run = only_run(query.list_runs(PROJECT))
        loss_steps = query.get_metric_history(run["run_id"], "loss")["steps"]
    assert run["status"] == "failed"
    assert run["end_time"] is not None
    assert run["total_steps"] == CRASH_STEP - 1
    assert loss_steps == [2]
    assert run["error"] is not None
    if mode == "uncaught":
        assert f"RuntimeError: {message}" in run["error"]
    else:
        assert "on_train_end" in run["error"]
