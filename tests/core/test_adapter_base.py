"""`tracer.integrations.TracerAdapter`, the base every framework adapter mixes in: settings
checked at once, a run id known before the run starts, copies that never carry the live run,
and the framework's own step count stored when a run ends mid-step."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tracer.analysis import QueryEngine
from tracer.exceptions import DuplicateRunError
from tracer.integrations import TracerAdapter, scalar_metrics


class Adapter(TracerAdapter):
    """The smallest adapter: what a framework's callback would be."""

    def __init__(self, project: str, run_name: Optional[str] = None, **settings: Any) -> None:
        self.init_tracer(project, run_name, settings)


def test_a_typo_in_the_settings_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_interval"):
        Adapter("p", storage_path=str(tmp_path), checkpoint_intervall=5)


def test_the_run_gets_the_id_planned_before_it_started(tmp_path: Path) -> None:
    adapter = Adapter("p", storage_path=str(tmp_path))
    planned = adapter.planned_run_id
    assert planned == adapter.planned_run_id  # stable until the run starts
    run = adapter.start_run({"lr": 0.1})
    assert run.run_id == planned
    adapter.end_run(total_steps=0)
    assert adapter.planned_run_id != planned  # a later new run gets a new id


def test_a_run_id_setting_names_the_run_and_a_taken_one_is_refused(tmp_path: Path) -> None:
    run = tracer.init(project="p", storage_path=str(tmp_path), run_id="my-id-1")
    tracer.finish()
    assert run.run_id == "my-id-1"
    with pytest.raises(DuplicateRunError, match="resume='my-id-1'"):
        tracer.init(project="p", storage_path=str(tmp_path), run_id="my-id-1")


def test_a_copy_carries_settings_and_run_id_never_the_live_run(tmp_path: Path) -> None:
    adapter = Adapter("p", storage_path=str(tmp_path))
    run = adapter.start_run()
    run.log({"loss": 1.0}, step=1)
    for clone in (copy.deepcopy(adapter), pickle.loads(pickle.dumps(adapter))):
        assert clone.run is None and clone.settings == adapter.settings
        assert clone.planned_run_id == run.run_id
    assert adapter.run is run and run.active  # the original is untouched
    adapter.end_run(total_steps=1)
    clone = pickle.loads(pickle.dumps(adapter))
    continued = clone.start_run()  # the copy continues its original's run
    assert continued.run_id == run.run_id
    continued.log({"loss": 0.5}, step=2)
    clone.end_run(total_steps=2)
    with QueryEngine(str(tmp_path)) as query:
        (stored,) = query.list_runs("p")
        assert stored["total_steps"] == 2
        assert query.get_metric_history(run.run_id, "loss")["steps"] == [1, 2]


def test_a_run_ended_mid_step_stores_the_frameworks_count(tmp_path: Path) -> None:
    adapter = Adapter("p", storage_path=str(tmp_path))
    done = {"steps": 0}
    run = adapter.start_run(completed_steps=lambda: done["steps"])
    for step in (1, 2, 3):
        run.log({"loss": 1.0}, step=step)  # step `step` is being trained
        done["steps"] = step
    run.log({}, step=4)  # the fourth step starts, and training crashes in it
    adapter.fail_run(RuntimeError("boom"))
    with QueryEngine(str(tmp_path)) as query:
        (stored,) = query.list_runs("p")
    assert (stored["status"], stored["total_steps"]) == ("failed", 3)


def test_scalar_metrics_keeps_numbers_and_one_element_arrays_only() -> None:
    np = pytest.importorskip("numpy")
    kept, skipped = scalar_metrics(
        {"a": 1, "b": np.float32(2.0), "c": np.array([3.0]), "d": "text", "e": [1, 2]}
    )
    assert sorted(kept) == ["a", "b", "c"] and skipped == ["d", "e"]
