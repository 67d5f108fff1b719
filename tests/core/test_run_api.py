"""The run API's behaviour: current run, steps, merging, object use, resume, modes."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest

import tracer
from tests.core.helpers import open_store, series
from tracer.config import TracerConfig
from tracer.core.tracer import TrainingTracer
from tracer.exceptions import RunNotFoundError


def test_init_returns_the_current_run() -> None:
    run = tracer.init(project="p")
    assert isinstance(run, TrainingTracer)
    assert tracer.get_run() is run
    tracer.finish()
    assert tracer.get_run() is None


def test_log_and_step_before_init_raise_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"tracer\.init"):
        tracer.log({"loss": 1.0})
    with pytest.raises(RuntimeError, match=r"tracer\.init"):
        tracer.step()


def test_finish_without_a_run_and_twice_is_harmless() -> None:
    tracer.finish()
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0})
    tracer.finish()
    tracer.finish()
    run.finish()
    with open_store() as store:
        stored = store.get_run(run.run_id)
    assert stored is not None and stored["status"] == "finished"


def test_log_after_finish_on_the_object_raises() -> None:
    run = tracer.init(project="p")
    run.finish()
    with pytest.raises(RuntimeError, match="finished"):
        run.log({"loss": 1.0})
    with pytest.raises(RuntimeError, match="finished"):
        tracer.log({"loss": 1.0})  # the module still points at the ended run


def test_second_init_finishes_the_first_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    first = tracer.init(project="p", run_name="first")
    tracer.log({"loss": 1.0})
    with caplog.at_level(logging.WARNING, logger="tracer"):
        second = tracer.init(project="p", run_name="second")
    assert "finishing it first" in caplog.text
    assert first.state == "ended" and tracer.get_run() is second
    with open_store() as store:
        stored = store.get_run(first.run_id)
    assert stored is not None and stored["status"] == "finished"
    assert series(first.run_id, "loss")["values"] == [1.0]


def test_every_logged_value_is_stored_at_its_step_not_only_at_checkpoints() -> None:
    run = tracer.init(project="p", checkpoint_interval=100)
    for step in range(250):
        tracer.log({"loss": 1.0 / (step + 1)})
        if step % 10 == 0:
            tracer.log({"eval/acc": step / 250})
        tracer.step()
    tracer.finish()
    loss = series(run.run_id, "loss")
    assert loss["steps"] == list(range(250))
    assert loss["values"] == [1.0 / (s + 1) for s in range(250)]
    assert series(run.run_id, "eval/acc")["steps"] == list(range(0, 250, 10))
    with open_store() as store:
        checkpoints = store.get_checkpoints(run.run_id)
        stored = store.get_run(run.run_id)
    assert [(c["step"], c["reason"]) for c in checkpoints] == [
        (10, "early"),  # what the model gets wrong from its init shows here
        (100, "interval"),
        (200, "interval"),
        (249, "finish"),
    ]
    assert checkpoints[1]["metrics"] == {"loss": 1.0 / 101, "eval/acc": 100 / 250}
    assert stored is not None and stored["total_steps"] == 250


def test_the_early_checkpoint_is_only_for_a_fresh_run_with_a_longer_interval() -> None:
    """Step 10 of a fresh run gets a checkpoint unless an interval one comes first; a
    resumed run, already past its start, gets none."""
    short = tracer.init(project="p", run_name="short", checkpoint_interval=5)
    for _ in range(12):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    first = tracer.init(project="p", run_name="resumed", checkpoint_interval=100)
    for _ in range(20):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    again = tracer.init(project="p", resume=first.run_id, checkpoint_interval=100)
    for _ in range(20):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    with open_store() as store:
        reasons = {
            run.run_id: [(c["step"], c["reason"]) for c in store.get_checkpoints(run.run_id)]
            for run in (short, again)
        }
    assert reasons[short.run_id] == [(5, "interval"), (10, "interval"), (11, "finish")]
    assert reasons[again.run_id] == [(10, "early"), (19, "finish"), (39, "finish")]


def test_several_logs_in_one_step_merge_and_the_last_value_wins() -> None:
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0, "lr": 0.1})
    tracer.log({"loss": 0.5, "acc": 0.9})
    tracer.step()
    tracer.finish()
    assert series(run.run_id, "loss") == {"steps": [0], "values": [0.5]}
    assert series(run.run_id, "lr") == {"steps": [0], "values": [0.1]}
    assert series(run.run_id, "acc") == {"steps": [0], "values": [0.9]}


def test_explicit_steps_for_frameworks_that_own_the_counter() -> None:
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0}, step=10)
    tracer.log({"acc": 0.5}, step=10)
    tracer.log({"loss": 0.8}, step=20)
    tracer.step()  # closes step 20
    tracer.log({"loss": 0.7})  # step 21
    assert run.current_step == 21
    tracer.finish()
    assert series(run.run_id, "loss") == {"steps": [10, 20, 21], "values": [1.0, 0.8, 0.7]}
    assert series(run.run_id, "acc") == {"steps": [10], "values": [0.5]}


def test_non_finite_values_round_trip_exactly() -> None:
    run = tracer.init(project="p")
    for value in (math.nan, math.inf, -math.inf, 1.5):
        tracer.log({"loss": value})
        tracer.step()
    tracer.finish()
    values = series(run.run_id, "loss")["values"]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 1.5]


def test_tensors_and_numpy_scalars_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    run = tracer.init(project="p")
    weight = torch.ones(2, requires_grad=True)
    loss = (weight * 3).sum()
    tracer.log(
        {
            "loss": loss,
            "one": torch.tensor([2.5]),
            "np32": np.float32(0.5),
            "np64": np.int64(3),
            "flag": True,
        }
    )
    pending = run._pending["loss"]
    assert not pending.requires_grad and pending.grad_fn is None  # no graph kept alive
    tracer.finish()
    for name, expected in (
        ("loss", 6.0),
        ("one", 2.5),
        ("np32", 0.5),
        ("np64", 3.0),
        ("flag", 1.0),
    ):
        assert series(run.run_id, name)["values"] == [expected], name


def test_runs_as_objects_side_by_side(tmp_path: Path) -> None:
    first = TrainingTracer(TracerConfig(project_name="a", storage_path=str(tmp_path / "s")))
    second = TrainingTracer(TracerConfig(project_name="b", storage_path=str(tmp_path / "s")))
    for step in range(5):
        first.log({"loss": float(step)})
        first.step()
        second.log({"loss": float(-step)})
        second.step()
    first.finish()
    second.finish()
    assert tracer.get_run() is None  # objects never touch the module's current run
    path = str(tmp_path / "s")
    assert series(first.run_id, "loss", path)["values"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert series(second.run_id, "loss", path)["values"] == [0.0, -1.0, -2.0, -3.0, -4.0]


def test_context_manager_marks_failure_and_success() -> None:
    with pytest.raises(ValueError, match="boom"), tracer.init(project="p") as failing:
        tracer.log({"loss": 1.0})
        raise ValueError("boom")
    with tracer.init(project="p") as passing:
        tracer.log({"loss": 1.0})
    with open_store() as store:
        failed, finished = store.get_run(failing.run_id), store.get_run(passing.run_id)
    assert failed is not None and failed["status"] == "failed"
    assert failed["error"] == "ValueError: boom"
    assert finished is not None and finished["status"] == "finished"


def test_resume_continues_the_same_run_from_its_last_step() -> None:
    first = tracer.init(project="p", run_name="preempted")
    for step in range(10):
        tracer.log({"loss": float(step)})
        tracer.step()
    tracer.finish()
    resumed = tracer.init(project="p", resume="preempted")
    assert resumed.run_id == first.run_id and resumed.current_step == 10
    for step in range(10, 15):
        tracer.log({"loss": float(step)})
        tracer.step()
    tracer.finish()
    again = tracer.init(project="p", resume=first.run_id)
    assert again.current_step == 15
    tracer.finish()
    assert series(first.run_id, "loss")["steps"] == list(range(15))
    with open_store() as store:
        assert len(store.list_runs("p")) == 1


def test_resume_of_an_unknown_run_names_near_matches() -> None:
    tracer.init(project="p", run_name="baseline-lr3e4")
    tracer.finish()
    with pytest.raises(RunNotFoundError, match="baseline-lr3e4"):
        tracer.init(project="p", resume="baseline-lr3e5")


def test_a_taken_run_name_gets_a_suffix_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tracer.init(project="p", run_name="exp")
    tracer.finish()
    with caplog.at_level(logging.WARNING):
        run = tracer.init(project="p", run_name="exp")
    assert run.run_name == "exp-2" and "resume='exp'" in caplog.text
    tracer.finish()
    tracer.init(project="other", run_name="exp")  # names are unique per project only
    assert tracer.get_run() is not None and tracer.get_run().run_name == "exp"  # type: ignore[union-attr]


def test_auto_generated_names_are_unique() -> None:
    names = set()
    for _ in range(20):
        names.add(tracer.init(project="p").run_name)
    assert len(names) == 20


def test_run_metadata_is_stored() -> None:
    run = tracer.init(
        project="p",
        tags=["baseline", "lr"],
        notes="first try",
        config={"lr": 3e-4, "layers": [1, 2]},
    )
    tracer.finish()
    with open_store() as store:
        stored = store.get_run(run.run_id)
    assert stored is not None
    assert stored["tags"] == ["baseline", "lr"] and stored["notes"] == "first try"
    assert stored["config"] == {"lr": 3e-4, "layers": [1, 2]}
    assert stored["pid"] == os.getpid() and stored["end_time"] is not None


def test_disabled_mode_makes_every_call_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACER_MODE", "disabled")
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0})
    tracer.step()
    tracer.finish()
    assert run.state == "disabled"
    assert not Path(".tracer").exists()


def test_storage_path_env_overrides_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACER_STORAGE_PATH", str(tmp_path / "elsewhere"))
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0})
    tracer.finish()
    assert (tmp_path / "elsewhere" / "tracer.db").exists() and not Path(".tracer").exists()
    assert series(run.run_id, "loss", str(tmp_path / "elsewhere"))["values"] == [1.0]


def test_synchronous_writes_are_visible_at_once() -> None:
    run = tracer.init(project="p", async_writes=False)
    tracer.log({"loss": 1.0})
    tracer.step()
    assert series(run.run_id, "loss") == {"steps": [0], "values": [1.0]}


def test_flush_makes_async_data_visible_mid_run() -> None:
    run = tracer.init(project="p", flush_interval=60)
    for step in range(3):
        tracer.log({"loss": float(step)})
        tracer.step()
    tracer.log({"loss": 9.0})  # the open step is written too
    assert run.flush()
    assert series(run.run_id, "loss") == {"steps": [0, 1, 2, 3], "values": [0.0, 1.0, 2.0, 9.0]}
