"""Registers the SQLite backend for the `sqlite://` scheme and for plain paths."""

from __future__ import annotations

from tracer.plugins.hookspecs import RegisterStorage, hookimpl
from tracer.storage.sqlite.backend import SQLiteStorage


@hookimpl
def tracer_register_storage(register: RegisterStorage) -> None:
    register("sqlite", SQLiteStorage)
