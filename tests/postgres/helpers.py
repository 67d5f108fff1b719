"""Locations in the test server: one PostgreSQL schema per test, named from a key, dropped
when the test ends (`drop_schemas`, called by the conftest)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

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


def running_test_server() -> Any:
    """The running test server (`tools/postgres_server.py`'s `PostgresServer`), to restart
    or stop it; loaded from its file, as tools/ is not a package."""
    path = Path(__file__).resolve().parents[2] / "tools" / "postgres_server.py"
    spec = importlib.util.spec_from_file_location("tracer_test_postgres_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.attach()
