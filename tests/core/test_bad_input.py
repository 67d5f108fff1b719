"""What a careless user passes: each misuse gets a clear error at the call site (or is
handled correctly), and nothing logged before it is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.core.helpers import open_store, series
from tracer.exceptions import StorageError

SQLISH = "loss'); DROP TABLE runs; --"


def _log(metrics: Any) -> Callable[[], None]:
    return lambda: tracer.log(metrics)


def _multi_element_tensor() -> None:
    torch = pytest.importorskip("torch")
    tracer.log({"loss": torch.ones(3)})


def _numpy_array() -> None:
    np = pytest.importorskip("numpy")
    tracer.log({"loss": np.ones(4)})


def _watch_with(optimizer_of: Callable[[Any], Any]) -> Callable[[], None]:
    def watch() -> None:
        torch = pytest.importorskip("torch")
        model = torch.nn.Linear(2, 1)
        tracer.watch(model, optimizer=optimizer_of(model))

    return watch


# (case, misuse during an active run, expected error, message pattern)
RUN_MISUSE: list[tuple[str, Callable[[], None], type[Exception], str]] = [
    ("non-dict log", _log([("loss", 1.0)]), TypeError, "dict of metric name"),
    ("None instead of metrics", _log(None), TypeError, "dict of metric name"),
    ("non-numeric value", _log({"ok": 1.0, "loss": "high"}), TypeError, "'loss'"),
    ("None value", _log({"loss": None}), TypeError, "'loss'"),
    ("complex value", _log({"loss": 1 + 2j}), TypeError, "'loss'"),
    ("list value", _log({"loss": [1.0, 2.0]}), TypeError, "'loss'"),
    ("non-str key", _log({1: 0.5}), TypeError, "metric names must be str"),
    ("empty key", _log({"": 0.5}), ValueError, "must not be empty"),
    ("multi-element tensor", _multi_element_tensor, TypeError, "3 elements"),
    ("numpy array", _numpy_array, TypeError, "4 elements"),
    ("string step", lambda: tracer.log({"loss": 1.0}, step="5"), TypeError, "step"),  # type: ignore[arg-type]
    ("negative step", lambda: tracer.log({"loss": 1.0}, step=-1), ValueError, "step"),
    ("watch a non-module", lambda: tracer.watch(object()), TypeError, "torch.nn.Module"),
    ("watch with a non-optimizer", _watch_with(lambda model: "adam"), TypeError, "got str"),
]


@pytest.mark.parametrize(
    ("case", "misuse", "error", "pattern"), RUN_MISUSE, ids=[case[0] for case in RUN_MISUSE]
)
def test_misuse_during_a_run_raises_and_loses_nothing(
    case: str, misuse: Callable[[], None], error: type[Exception], pattern: str
) -> None:
    run = tracer.init(project="p")
    for step in range(3):
        tracer.log({"loss": float(step)})
        tracer.step()
    tracer.log({"before": 1.0})
    with pytest.raises(error, match=pattern):
        misuse()
    tracer.log({"after": 2.0})
    tracer.step()
    tracer.finish()
    assert series(run.run_id, "loss") == {"steps": [0, 1, 2], "values": [0.0, 1.0, 2.0]}
    assert series(run.run_id, "before") == {"steps": [3], "values": [1.0]}
    assert series(run.run_id, "after") == {"steps": [3], "values": [2.0]}
    assert series(run.run_id, "ok")["steps"] == []  # a rejected call records nothing


# (case, keyword arguments of tracer.init, expected error, message pattern)
CONFIG_MISUSE: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("typo'd key", {"checkpoint_intervall": 5}, ValueError, "did you mean 'checkpoint_interval'"),
    ("typo'd key 2", {"track_gradient": False}, ValueError, "did you mean 'track_gradients'"),
    ("zero interval", {"checkpoint_interval": 0}, ValueError, "checkpoint_interval"),
    ("negative buffer", {"write_buffer_size": -1}, ValueError, "write_buffer_size"),
    ("interval as words", {"checkpoint_interval": "often"}, ValueError, "checkpoint_interval"),
    ("tags as a string", {"tags": "baseline"}, ValueError, "tags"),
    ("blank storage path", {"storage_path": "  "}, ValueError, "storage_path"),
    ("negative retention", {"retention_days": -1}, ValueError, "retention_days"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "error", "pattern"), CONFIG_MISUSE, ids=[case[0] for case in CONFIG_MISUSE]
)
def test_bad_configuration_names_the_field_and_keeps_the_open_run(
    case: str, kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0})
    with pytest.raises(error, match=pattern):
        tracer.init(project="p", **kwargs)
    assert tracer.get_run() is run and run.state == "active"
    tracer.finish()
    assert series(run.run_id, "loss")["values"] == [1.0]


@pytest.mark.parametrize("project", ["", "   "])
def test_empty_project_is_refused(project: str) -> None:
    with pytest.raises(ValueError, match="project_name"):
        tracer.init(project=project)


def test_storage_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("hello")
    with pytest.raises(StorageError, match="is a file"):
        tracer.init(project="p", storage_path=str(target))
    assert target.read_text() == "hello"


def test_missing_storage_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    run = tracer.init(project="p", storage_path=str(path))
    tracer.log({"loss": 1.0})
    tracer.finish()
    assert series(run.run_id, "loss", str(path))["values"] == [1.0]


def test_corrupted_database_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    run = tracer.init(project="p")
    tracer.log({"loss": 1.0})
    tracer.finish()
    database = Path(".tracer/tracer.db")
    garbage = b"this is not sqlite" * 500
    database.write_bytes(garbage)
    with pytest.raises(StorageError, match="not a readable Tracer database"):
        tracer.init(project="p")
    assert database.read_bytes() == garbage
    assert run.state == "ended"


def test_sql_looking_metric_names_are_just_names() -> None:
    run = tracer.init(project="p'; DROP TABLE runs; --", run_name=SQLISH)
    tracer.log({SQLISH: 1.0, "loss": 2.0})
    tracer.finish()
    assert series(run.run_id, SQLISH)["values"] == [1.0]
    with open_store() as store:
        assert store.list_runs("p'; DROP TABLE runs; --")[0]["run_name"] == SQLISH
    tables = (
        sqlite3.connect(".tracer/tracer.db")
        .execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetchall()
    )
    assert ("runs",) in tables


def test_path_looking_run_names_never_become_paths(tmp_path: Path) -> None:
    before = set(tmp_path.rglob("*"))
    run = tracer.init(project="../../p", run_name="../../../etc/passwd")
    tracer.log({"loss": 1.0})
    tracer.finish()
    created = set(tmp_path.rglob("*")) - before
    assert all(".tracer" in path.parts for path in created)
    assert run.run_name == "../../../etc/passwd"
    assert series(run.run_id, "loss")["values"] == [1.0]


def test_nan_and_huge_values_are_data_not_errors() -> None:
    run = tracer.init(project="p")
    tracer.log({"loss": float("nan"), "big": 1e308, "int": 2**62})
    tracer.finish()
    assert series(run.run_id, "big")["values"] == [1e308]
    assert series(run.run_id, "int")["values"] == [float(2**62)]


def test_a_setting_without_effect_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        tracer.init(project="p", max_workers=8)
    assert "max_workers has no effect" in caplog.text


def test_record_model_save_refuses_what_is_not_a_path_or_a_step() -> None:
    run = tracer.init(project="p")
    for bad_path in (None, 123, ""):
        with pytest.raises(TypeError, match="checkpoint's path"):
            tracer.record_model_save(bad_path)  # type: ignore[arg-type]
    for bad_step in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="step must be an int"):
            tracer.record_model_save("ckpt.pt", step=bad_step)  # type: ignore[arg-type]
    tracer.record_model_save(Path("ckpt.pt"), step=2)  # type: ignore[arg-type]
    tracer.finish()
    with open_store() as store:
        saves = [e["data"]["path"] for e in store.get_events(run.run_id, "model_saved")]
    assert saves == ["ckpt.pt"]
