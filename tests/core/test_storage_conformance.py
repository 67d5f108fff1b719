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
