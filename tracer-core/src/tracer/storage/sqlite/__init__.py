"""The built-in SQLite storage backend."""

from __future__ import annotations

from tracer.storage.sqlite.backend import SQLiteStorage
from tracer.storage.sqlite.connection import database_path

__all__ = ["SQLiteStorage", "database_path"]
