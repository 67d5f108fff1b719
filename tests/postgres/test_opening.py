"""Opening a PostgreSQL location: clear errors for what is wrong, no password ever shown, and
a database that is not Tracer's left untouched."""

from __future__ import annotations

import logging
import os
import socket

import psycopg
import pytest
from psycopg import sql

import tracer
from tests.postgres.helpers import dropped_after_test, schema_url, server_url
from tracer.config import TracerConfig, mask_password
from tracer.exceptions import StorageError, StoreNotFoundError
from tracer.storage import open_storage
from tracer_postgres import PostgresStorage
from tracer_postgres.schema import MARK_TABLE, SCHEMA_VERSION

SECRET = "s3cr3t-not-this"


def tcp_url(password: str, database: str = "tracer_test", schema: str = "") -> str:
    user = os.environ["PGUSER"]
    port = os.environ["PGPORT"]
    query = f"?schema={schema}" if schema else ""
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}{query}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_password_is_masked_everywhere_it_could_show() -> None:
    url = f"postgresql://alice:{SECRET}@db.example.com:5432/tracer?sslmode=require"
    assert SECRET not in mask_password(url)
    assert mask_password(url).startswith("postgresql://alice:***@db.example.com:5432/tracer")
    assert SECRET not in mask_password(f"host=db password={SECRET} dbname=x")
    assert SECRET not in mask_password(f"postgresql://db/x?password={SECRET}&user=bob")
    assert SECRET not in repr(TracerConfig(project_name="p", storage_path=url))
    assert SECRET not in str(TracerConfig(project_name="p", storage_path=url))


def test_the_right_password_over_tcp_opens_and_is_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = os.environ["TRACER_TEST_POSTGRES_PASSWORD"]
    url = tcp_url(password, schema=dropped_after_test("t_password_ok"))
    with tracer.init(project="p", storage_path=url, config={"lr": 0.1}) as run:
        tracer.log({"loss": 1.0})
        tracer.step()
        assert password not in repr(run) and password not in repr(run.config)
        assert password not in repr(run.storage)
    storage = open_storage(url)
    try:
        (record,) = storage.list_runs("p")
        assert record["status"] == "finished"
        assert password not in str(record["config"]) + str(record["settings"])
        assert storage.get_metric_timeseries(record["run_id"], "loss")["values"] == [1.0]
    finally:
        storage.close()
    assert password not in caplog.text


def test_wrong_password_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        PostgresStorage(tcp_url(SECRET))
    message = str(caught.value)
    assert "password" in message and SECRET not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_database_is_named() -> None:
    password = os.environ["TRACER_TEST_POSTGRES_PASSWORD"]
    with pytest.raises(StorageError, match=r"no_such_db.*does not exist") as caught:
        PostgresStorage(tcp_url(password, database="no_such_db"))
    assert password not in str(caught.value)


def test_server_down_at_init_is_a_storage_error() -> None:
    url = f"postgresql://nobody@127.0.0.1:{_free_port()}/tracer?connect_timeout=3"
    with pytest.raises(StorageError, match="cannot reach PostgreSQL at postgresql://nobody@"):
        PostgresStorage(url)
    with pytest.raises(StorageError):
        tracer.init(project="p", storage_path=url)


def test_a_schema_with_other_tables_and_no_mark_is_left_untouched() -> None:
    url = f"{server_url()}&schema={dropped_after_test('t_foreign_app')}"
    with psycopg.connect(server_url(), autocommit=True) as connection:
        connection.execute("CREATE SCHEMA t_foreign_app")
        connection.execute("CREATE TABLE t_foreign_app.users (id integer)")
    with pytest.raises(StorageError, match=r"users.*Tracer leaves it untouched"):
        PostgresStorage(url)
    with psycopg.connect(server_url(), autocommit=True) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 't_foreign_app'"
        ).fetchall()
    assert tables == [("users",)]


def test_a_newer_schema_version_is_refused() -> None:
    url = schema_url("newer")
    PostgresStorage(url).close()
    name = url.rsplit("=", 1)[1]
    with psycopg.connect(server_url(), autocommit=True) as connection:
        connection.execute(
            sql.SQL("UPDATE {}.{} SET version = %s").format(
                sql.Identifier(name), sql.Identifier(MARK_TABLE)
            ),
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(StorageError, match="newer than this tracer-postgres"):
        PostgresStorage(url)


def test_a_reader_creates_nothing_where_nothing_was_recorded() -> None:
    url = schema_url("empty-reader")
    with pytest.raises(StoreNotFoundError):
        open_storage(url, read_only=True)
    with psycopg.connect(server_url(), autocommit=True) as connection:
        found = connection.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
            (url.rsplit("=", 1)[1],),
        ).fetchone()
    assert found == (0,)
    PostgresStorage(url).close()
    reader = open_storage(url, read_only=True)
    try:
        assert reader.list_runs() == []
        with pytest.raises(StorageError, match="read only"):
            reader.update_run("x", status="finished")
    finally:
        reader.close()


def test_postgres_scheme_alias_and_storage_path_env(monkeypatch: pytest.MonkeyPatch) -> None:
    url = schema_url("env").replace("postgresql://", "postgres://", 1)
    monkeypatch.setenv("TRACER_STORAGE_PATH", url)
    with tracer.init(project="p") as run:
        assert isinstance(run.storage, PostgresStorage)
        tracer.log({"x": 2.0})
        tracer.step()
    reader = open_storage(url)
    try:
        assert [r["status"] for r in reader.list_runs("p")] == ["finished"]
    finally:
        reader.close()
