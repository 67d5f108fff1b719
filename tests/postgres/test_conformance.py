"""`PostgresStorage` passes the conformance suite every backend owes Tracer (and its readers'
part), against the real server."""

from __future__ import annotations

from pathlib import Path

from tests.postgres.helpers import schema_url
from tracer.config import TracerConfig
from tracer.storage import StorageBackend
from tracer.testing import StorageConformance
from tracer_postgres import PostgresStorage


class TestPostgresConformance(StorageConformance):
    def make_storage(self, location: Path) -> StorageBackend:
        return PostgresStorage(schema_url(str(location)))


class TestPostgresThroughSchemeConformance(StorageConformance):
    """`postgresql://` selects the backend through the plugin entry point, as a run opens it."""

    def make_storage(self, location: Path) -> StorageBackend:
        url = schema_url(str(location))
        backend = StorageBackend(TracerConfig(project_name="t", storage_path=url))
        assert isinstance(backend, PostgresStorage)
        return backend
