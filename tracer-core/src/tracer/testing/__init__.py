"""Conformance suites that third-party plugins subclass to prove they behave like the built-ins.

    from tracer.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        def make_storage(self, location):
            return MyStorage(TracerConfig(project_name="t", storage_path=f"my://{location}"))

Needs pytest (not a dependency of tracer-core): `pip install pytest`.
"""

from __future__ import annotations

from tracer.testing.storage_suite import StorageConformance

__all__ = ["StorageConformance"]
