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
    return f"{server_url()}&schema={dropped_after_test(name)}"


def dropped_after_test(schema: str) -> str:
    """`schema`, to be dropped (with all it holds) when the test ends."""
    if schema not in _created:
        _created.append(schema)
    return schema


def drop_schemas() -> None:
    if not _created:
        return
    with psycopg.connect(server_url(), autocommit=True) as connection:
        for name in _created:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )
    _created.clear()


def drop_schema_of(url: str) -> None:
    """Drop the schema a `schema_url` names (for stores a whole module shares)."""
    name = url.rsplit("&schema=", 1)[1]
    with psycopg.connect(server_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def shared_schema_url(key: str) -> str:
    """Like `schema_url`, but not dropped when a test ends: the caller drops it
    (`drop_schema_of`)."""
    return f"{server_url()}&schema=m_{hashlib.sha1(key.encode()).hexdigest()[:16]}"
