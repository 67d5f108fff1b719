"""Registers `PostgresStorage` for `postgresql://` and `postgres://` locations; loaded by
Tracer's plugin manager from this package's `tracer.plugins` entry point."""

from __future__ import annotations

from tracer.plugins import hookimpl
from tracer.plugins.hookspecs import RegisterStorage
from tracer_postgres.backend import PostgresStorage
from tracer_postgres.location import SCHEMES


@hookimpl
def tracer_register_storage(register: RegisterStorage) -> None:
    for scheme in SCHEMES:
        register(scheme, PostgresStorage)
