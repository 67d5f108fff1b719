"""The built-in SQLite backend passes the same conformance suite third parties subclass."""

from __future__ import annotations

from pathlib import Path

from tracer.config import TracerConfig
from tracer.storage import StorageBackend
from tracer.storage.sqlite import SQLiteStorage
from tracer.testing import StorageConformance


class TestSQLiteConformance(StorageConformance):
    def make_storage(self, location: Path) -> StorageBackend:
        return SQLiteStorage(TracerConfig(project_name="t", storage_path=str(location)))


class TestSQLiteThroughSchemeConformance(StorageConformance):
    """`sqlite://` selects the same backend through the plugin registry."""

    def make_storage(self, location: Path) -> StorageBackend:
        backend = StorageBackend(
            TracerConfig(project_name="t", storage_path=f"sqlite://{location}")
        )
        assert isinstance(backend, SQLiteStorage)
        return backend


class _DefaultReaders(SQLiteStorage):
    """SQLite with the interface's own reader methods (built on the rest): the window,
    anomaly counts, and the frame API's histories, summaries and events of many runs."""

    get_metric_window = StorageBackend.get_metric_window
    anomaly_counts = StorageBackend.anomaly_counts
    iter_metric_histories = StorageBackend.iter_metric_histories
    metric_summaries = StorageBackend.metric_summaries
    events_by_run = StorageBackend.events_by_run


class TestDefaultReaderMethodsConformance(StorageConformance):
    """The defaults a third-party backend inherits pass the same tests as SQLite's SQL."""

    def make_storage(self, location: Path) -> StorageBackend:
        return _DefaultReaders(TracerConfig(project_name="t", storage_path=str(location)))
