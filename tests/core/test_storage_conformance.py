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
    """SQLite with the interface's own window and anomaly counts (built on the rest)."""

    get_metric_window = StorageBackend.get_metric_window
    anomaly_counts = StorageBackend.anomaly_counts


class TestDefaultReaderMethodsConformance(StorageConformance):
    """The defaults a third-party backend inherits pass the same tests as SQLite's SQL."""

    def make_storage(self, location: Path) -> StorageBackend:
        return _DefaultReaders(TracerConfig(project_name="t", storage_path=str(location)))
