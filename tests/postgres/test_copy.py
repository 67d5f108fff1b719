"""`tracer copy` moves runs from SQLite to PostgreSQL and back, every value exact (NaN and
+-Inf bit for bit), and copying again changes nothing."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.postgres.helpers import schema_url
from tracer.exceptions import StorageError
from tracer.storage import StorageBackend, open_storage
from tracer.storage.transfer import copy_runs

ODD_VALUES = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 0.1]


def _bits(value: Any) -> Any:
    """Floats as their bytes, anywhere in a structure (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(value, float):
        return struct.pack("<d", value).hex()
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bits(v) for v in value]
    return value


def _dump(storage: StorageBackend) -> dict[str, Any]:
    everything: dict[str, Any] = {}
    for run in storage.list_runs():
        run_id = run["run_id"]
        everything[run_id] = _bits(
            {
                "run": dict(run),
                "metrics": {
                    m["name"]: [list(a) for a in storage.get_metric_arrays(run_id, m["name"])]
                    for m in storage.list_metrics(run_id)
                },
                "summaries": storage.list_metrics(run_id),
                "checkpoints": storage.get_checkpoints(run_id),
                "events": storage.get_events(run_id),
                "samples": storage.get_samples(run_id),
                "anomalies": storage.get_anomalies(run_id),
            }
        )
    return everything


def _write_source(path: str) -> None:
    for name in ("first", "second"):
        with tracer.init(
            project="moving", run_name=name, storage_path=path, config={"lr": math.inf},
            tags=["t"], checkpoint_interval=50, track_system_metrics=False,
        ):  # fmt: skip
            for step in range(300):
                loss = 50.0 if step == 120 else 1.0 / (1 + step)
                tracer.log({"loss": loss, "odd": ODD_VALUES[step % len(ODD_VALUES)]})
                tracer.step()
    storage = open_storage(path)
    try:
        run_id = storage.list_runs(project_name="moving")[0]["run_id"]
        storage.write_samples(
            run_id,
            [
                {
                    "step": 7,
                    "reason": "anomaly",
                    "role": "input",
                    "name": "x",
                    "shape": [2, 2],
                    "dtype": "float32",
                    "values": [[math.nan, 1.0]],
                    "truncated": True,
                }
            ],
        )
        storage.write_events(run_id, [{"step": 9, "kind": "model_save", "data": {"path": "/m"}}])
    finally:
        storage.close()


def _copy(source: str, target: str, *runs: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tracer.cli", "copy", source, target, *runs],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_round_trip_sqlite_to_postgres_and_back(tmp_path: Path) -> None:
    sqlite_path, back_path = str(tmp_path / "local"), str(tmp_path / "back")
    url = schema_url("copy")
    _write_source(sqlite_path)
    first = _copy(sqlite_path, url)
    assert first.count("copied") == 2
    assert _copy(sqlite_path, url).count("up to date") == 2  # again: nothing changes
    _copy(url, back_path)
    stores = [open_storage(location) for location in (sqlite_path, url, back_path)]
    try:
        original, on_postgres, back = (_dump(storage) for storage in stores)
        assert len(original) == 2
        assert all(run["anomalies"] and run["checkpoints"] for run in original.values())
        assert original == on_postgres == back
    finally:
        for storage in stores:
            storage.close()


def test_a_run_that_went_on_is_replaced_and_the_copy_is_idempotent(tmp_path: Path) -> None:
    url = schema_url("copy-replace")
    source, target = open_storage(str(tmp_path / "src")), open_storage(url)
    try:
        source.create_run("r1", "p", "n1", 1.0, {})
        source.write_metrics("r1", {"loss": ([0, 1], [1.0, math.nan])})
        source.write_events("r1", [{"step": 1, "kind": "k", "data": {}}])
        assert [c.outcome for c in copy_runs(source, target)] == ["copied"]
        source.write_metrics("r1", {"loss": ([2], [0.5])})
        source.update_run("r1", total_steps=3, status="finished", end_time=5.0)
        assert [c.outcome for c in copy_runs(source, target)] == ["replaced"]
        assert [c.outcome for c in copy_runs(source, target)] == ["up to date"]
        assert _dump(target) == _dump(source)
        assert len(target.get_events("r1")) == 1  # replaced, never doubled
        target.update_run("r1", total_steps=10)  # resumed in the target: never overwritten
        source.update_run("r1", heartbeat=9.0)
        with pytest.raises(StorageError, match="gone further in the target"):
            copy_runs(source, target)
    finally:
        source.close()
        target.close()
