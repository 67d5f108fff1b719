"""`open_storage(location, read_only=True)`: a reader that never writes (the dashboard's way
of opening the store a run is writing), yet sees what the run commits."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import tracer
from tracer.exceptions import StorageError
from tracer.storage import open_storage


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def test_read_only_reader_sees_new_commits_and_never_writes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    tracer.init("p", run_name="a", storage_path=str(store), flush_interval=0.05)
    tracer.log({"loss": 1.0})
    tracer.step()
    tracer.finish()
    database = store / "tracer.db"
    before = _fingerprint(database)
    reader = open_storage(str(store), read_only=True)
    try:
        assert [r["run_name"] for r in reader.list_runs()] == ["a"]
        with pytest.raises(StorageError, match="read-only"):
            reader.update_run(reader.list_runs()[0]["run_id"], notes="x")
        assert _fingerprint(database) == before
        tracer.init("p", run_name="b", storage_path=str(store))
        tracer.finish()
        assert sorted(r["run_name"] for r in reader.list_runs()) == ["a", "b"]
    finally:
        reader.close()


def test_read_only_reader_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no Tracer database"):
        open_storage(str(tmp_path / "nothing"), read_only=True)
    assert not (tmp_path / "nothing").exists()
