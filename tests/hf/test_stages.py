"""`trainer.evaluate()` and `trainer.predict()` outside `train()`, on a real Trainer.

HF reports them through `on_evaluate` / `on_predict` only. After a `train()` whose run
finished, their metrics go into that run (resumed, then finished again with its
`total_steps`); without one, into a run of their own whose config names the stage. A failed
run is never resumed. Metrics are stored at the Trainer's `global_step`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.hf.helpers import (
    PROJECT,
    CrashForwardAtStep,
    PoisonForwardAtStep,
    TokenDataset,
    make_trainer,
    only_run,
    tiny_model,
    tracer_callback,
)
from tracer.analysis import QueryEngine
from tracer.storage import RunRecord

MAX_STEPS = 12


def history(run_id: str, metric: str) -> dict[str, list[Any]]:
    with QueryEngine() as query:
        return query.get_metric_history(run_id, metric)


def runs() -> list[RunRecord]:
    with QueryEngine() as query:
        return query.list_runs(PROJECT)


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_evaluate_or_predict_after_train_goes_into_the_train_run(tmp_path: Path, call: str) -> None:
    """After `train()`, `evaluate(metric_key_prefix="final")` / `predict(...)` store their
    metrics in the training's run at step 12; it is still the only run, "finished", with
    total_steps 12, and its training series are untouched."""
    callback = tracer_callback()
    trainer = make_trainer(tmp_path / "out", [callback], max_steps=MAX_STEPS)
    trainer.train()
    assert callback.run is not None
    run_id = callback.run.run_id

    if call == "evaluate":
        metrics = trainer.evaluate(metric_key_prefix="final")
    else:
        metrics = trainer.predict(TokenDataset(8, seed=2), metric_key_prefix="final").metrics
    assert metrics is not None

    run = only_run(runs())
    assert run["run_id"] == run_id
    assert run["status"] == "finished"
    assert run["error"] is None
    assert run["total_steps"] == trainer.state.global_step == MAX_STEPS
    final = history(run_id, "final_loss")
    assert final["steps"] == [MAX_STEPS]
    assert final["values"] == pytest.approx([metrics["final_loss"]])
    assert history(run_id, "loss")["steps"] == [2, 4, 6, 8, 10, 12]
    assert history(run_id, "eval_loss")["steps"] == [4, 8, 12]


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_evaluate_or_predict_without_train_is_a_run_of_its_own(tmp_path: Path, call: str) -> None:
    """No `train()`: the call makes one run, "finished" when it returns, its config the
    TrainingArguments and the stage, the metrics at step 0 (the untrained model's
    `global_step`), total_steps 0."""
    callback = tracer_callback()
    trainer = make_trainer(tmp_path / "out", [callback])
    if call == "evaluate":
        metrics = trainer.evaluate()
        key = "eval_loss"
    else:
        metrics = trainer.predict(TokenDataset(8, seed=2)).metrics
        key = "test_loss"
    assert metrics is not None

    run = only_run(runs())
    assert run["status"] == "finished"
    assert run["total_steps"] == 0
    assert run["config"]["stage"] == call
    assert run["config"]["training_args"]["max_steps"] == MAX_STEPS
    assert "model_config" in run["config"]
    stored = history(run["run_id"], key)
    assert stored["steps"] == [0]
    assert stored["values"] == pytest.approx([metrics[key]])
    assert callback.run is not None and not callback.active


def test_evaluate_on_several_datasets_then_predict_make_one_run(tmp_path: Path) -> None:
    """`evaluate()` on a dict of datasets calls `on_evaluate` once per dataset, and a
    `predict()` follows: without a train, all of it is one run, stage "evaluate"."""
    callback = tracer_callback()
    trainer = make_trainer(tmp_path / "out", [callback])
    trainer.evaluate({"a": TokenDataset(8, seed=2), "b": TokenDataset(8, seed=3)})
    trainer.predict(TokenDataset(8, seed=4))

    run = only_run(runs())
    assert run["status"] == "finished"
    assert run["config"]["stage"] == "evaluate"
    for metric in ("eval_a_loss", "eval_b_loss", "test_loss"):
        assert history(run["run_id"], metric)["steps"] == [0], metric


def test_a_halted_run_is_not_resumed_by_a_later_evaluate(tmp_path: Path) -> None:
    """`halt_on` stops training and fails its run; a later `evaluate()` leaves that run as
    it is ("failed", its error and total_steps) and stores its metrics in a run of its own
    at the step training stopped."""
    model = tiny_model()
    callback = tracer_callback(halt_on=["nan_or_inf"], write_buffer_size=1)
    trainer = make_trainer(
        tmp_path / "out",
        [callback, PoisonForwardAtStep(model, 3)],
        model=model,
        max_steps=60,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
    )
    trainer.train()
    stopped = trainer.state.global_step
    assert callback.run is not None
    halted_id = callback.run.run_id
    before = only_run(runs())
    assert before["status"] == "failed"

    trainer.evaluate()
    stored = {run["run_id"]: run for run in runs()}
    assert len(stored) == 2
    halted = stored.pop(halted_id)
    (evaluation,) = stored.values()
    assert halted["status"] == "failed"
    assert halted["error"] == before["error"]
    assert halted["total_steps"] == before["total_steps"] == stopped
    assert history(halted_id, "eval_loss")["steps"] == []
    assert evaluation["config"]["stage"] == "evaluate"
    assert history(evaluation["run_id"], "eval_loss")["steps"] == [stopped]


def test_evaluate_after_a_crashed_train_goes_into_the_open_run(tmp_path: Path) -> None:
    """`train()` raised (HF reports no exception, so its run is still open): an `evaluate()`
    then is stored in that run at the Trainer's `global_step`, and the run is not marked
    finished; the next `train()` ends it "failed" with the completed steps."""
    model = tiny_model()
    crasher = CrashForwardAtStep(model, 3)
    callback = tracer_callback()
    trainer = make_trainer(
        tmp_path / "out", [callback, crasher], model=model, eval_strategy="no", save_strategy="no"
    )
    with pytest.raises(RuntimeError):
        trainer.train()
    assert callback.run is not None
    crashed_id = callback.run.run_id
    trainer.evaluate(metric_key_prefix="after_crash")
    assert callback.active
    callback.run.flush()
    assert only_run(runs())["status"] == "running"

    crasher.step = -1
    trainer.train()
    stored = {run["run_id"]: run for run in runs()}
    assert len(stored) == 2
    assert stored[crashed_id]["status"] == "failed"
    assert stored[crashed_id]["total_steps"] == 2
    assert history(crashed_id, "after_crash_loss")["steps"] == [2]
