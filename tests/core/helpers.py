"""Reading a storage location back in tests, the way a user of the storage API would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from tracer.config import TracerConfig
from tracer.storage import StorageBackend


@contextmanager
def open_store(storage_path: str = "./.tracer") -> Iterator[StorageBackend]:
    store = StorageBackend(TracerConfig(project_name="reader", storage_path=storage_path))
    try:
        yield store
    finally:
        store.close()


def series(run_id: str, metric: str, storage_path: str = "./.tracer") -> dict[str, list]:
    with open_store(storage_path) as store:
        return dict(store.get_metric_timeseries(run_id, metric))


def points_stored(db: Path, run_id: str) -> int:
    """Every point of the run in the file (all its series), read with a plain connection."""
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM series WHERE run_id = ?", (run_id,)
        ).fetchone()
    return int(row[0])
