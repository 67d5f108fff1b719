"""Locations in the test server: one PostgreSQL schema per test, named from a key, dropped
when the test ends (`drop_schemas`, called by the conftest)."""

from __future__ import annotations

import hashlib
import os

import psycopg
from psycopg import sql

_created: list[str] = []


def server_url() -> str:
    return os.environ["TRACER_TEST_POSTGRES_URL"]


def schema_url(key: str) -> str:
    """A `postgresql://` location of its own for `key` (the same key: the same location)."""
    name = "t_" + hashlib.sha1(key.encode()).hexdigest()[:16]
    if name not in _created:
        _created.append(name)
    return f"{server_url()}&schema={name}"


def drop_schemas() -> None:
    if not _created:
        return
    with psycopg.connect(server_url(), autocommit=True) as connection:
        for name in _created:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
    _created.clear()
