"""`tracer copy SRC DST` between two SQLite stores (the PostgreSQL round trip is in
tests/postgres/test_copy.py): everything copied exactly, a second copy changes nothing."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import tracer
from tracer.storage import StorageBackend, open_storage


def _bits(value: Any) -> Any:
    if isinstance(value, float):
        return struct.pack("<d", value).hex()
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bits(v) for v in value]
    return value


def _dump(storage: StorageBackend) -> Any:
    return _bits(
        {
            run["run_id"]: [
                dict(run),
                [list(storage.get_metric_arrays(run["run_id"], m["name"])[1])
                 for m in storage.list_metrics(run["run_id"])],
                storage.get_checkpoints(run["run_id"]),
                storage.get_events(run["run_id"]),
                storage.get_anomalies(run["run_id"]),
            ]
            for run in storage.list_runs()
        }
    )  # fmt: skip


def _copy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracer.cli", "copy", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_copy_between_sqlite_stores_is_exact_and_idempotent(tmp_path: Path) -> None:
    source, target = str(tmp_path / "a"), str(tmp_path / "b")
    for name in ("one", "two"):
        with tracer.init(project="p", run_name=name, storage_path=source, checkpoint_interval=20,
                         track_system_metrics=False):  # fmt: skip
            for step in range(100):
                tracer.log({"loss": 40.0 if step == 70 else 1.0, "x": [math.nan, -0.0][step % 2]})
                tracer.step()
    done = _copy(source, target, "one")
    assert done.returncode == 0, done.stderr
    assert "copied" in done.stdout and "two" not in done.stdout
    done = _copy(source, target)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout and "copied" in done.stdout
    assert _copy(source, target).stdout.count("up to date") == 2
    readers = [open_storage(source), open_storage(target)]
    try:
        assert _dump(readers[0]) == _dump(readers[1])
    finally:
        for reader in readers:
            reader.close()
    missing = _copy(str(tmp_path / "nowhere"), target)
    assert missing.returncode == 1 and "no Tracer data" in missing.stderr
