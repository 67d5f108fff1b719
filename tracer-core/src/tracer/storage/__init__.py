"""Storage: the backend interface, the registry that picks one by scheme, and (re-exported)
the records.

`StorageBackend(config)` opens the backend for `config.storage_path` (SQLite by default).
"""

from __future__ import annotations

from tracer.records import (
    RUN_STATUSES,
    CheckpointRecord,
    EventRecord,
    MetricSeries,
    MetricSummary,
    RunRecord,
    SampleRecord,
)
from tracer.storage.base import StorageBackend
from tracer.storage.registry import backend_class_for, open_storage

StorageBackend._backend_for = backend_class_for  # so StorageBackend(config) opens a backend

__all__ = [
    "RUN_STATUSES",
    "CheckpointRecord",
    "EventRecord",
    "MetricSeries",
    "MetricSummary",
    "RunRecord",
    "SampleRecord",
    "StorageBackend",
    "open_storage",
]
