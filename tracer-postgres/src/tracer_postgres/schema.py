"""The PostgreSQL schema, Tracer's mark on it, its version and the migrations.

Built for 10^9 points: `metric_chunks` holds each series as packed chunks of up to 256 points
keyed `(series_id, first_step)` (about 11 bytes a point with evenly spaced steps, index and page
space included; see `tracer_postgres.chunks`), with series names interned in `series` (one row
per run and metric, which also keeps the summaries `list_metrics` answers from). Values are
float64 bit for bit, so NaN and +-Inf stay exact. `metric_chunks` has no foreign key (a check
per row would cost more than the write); deleting a run deletes its chunks first
(`PostgresStorage.delete_run`).

`tracer_schema` is the positive mark: one row, application "tracer", the schema version. A
schema that holds other tables but no mark is refused untouched; one from a newer Tracer is
refused too. Each migration moves the schema up one version inside the transaction that opens
it, under an advisory lock, so processes starting together migrate once. Add a migration by
appending to `MIGRATIONS`; never edit a released one.
"""

from __future__ import annotations

import logging
from typing import Any

from tracer.exceptions import StorageError
from tracer_postgres.chunks import CHUNK_POINTS, COLUMNS

logger = logging.getLogger(__name__)

APPLICATION = "tracer"
MARK_TABLE = "tracer_schema"
_MIGRATION_LOCK = 0x54524352  # "TRCR": the advisory lock key held while migrating

_V1 = (
    f"CREATE TABLE {MARK_TABLE} (application text PRIMARY KEY CHECK (application = 'tracer'),"
    " version integer NOT NULL)",
    """CREATE TABLE runs (
        id text PRIMARY KEY,
        project text NOT NULL,
        name text NOT NULL,
        status text NOT NULL,
        tags text NOT NULL DEFAULT '[]',
        notes text,
        config text NOT NULL DEFAULT '{}',
        start_time double precision NOT NULL,
        end_time double precision,
        heartbeat double precision,
        heartbeat_interval double precision,
        host text,
        pid integer,
        rank integer NOT NULL DEFAULT 0,
        world_size integer NOT NULL DEFAULT 1,
        total_steps bigint NOT NULL DEFAULT 0,
        error text,
        settings text NOT NULL DEFAULT '{}',
        created bigint GENERATED ALWAYS AS IDENTITY,
        UNIQUE (project, name))""",
    "CREATE INDEX runs_by_project ON runs (project, start_time)",
    """CREATE TABLE series (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        name text NOT NULL,
        count bigint NOT NULL DEFAULT 0,
        last_step bigint,
        last_value double precision,
        min_value double precision,
        max_value double precision,
        UNIQUE (run_id, name))""",
    """CREATE TABLE metric_points (
        series_id integer NOT NULL,
        step bigint NOT NULL,
        value double precision NOT NULL,
        PRIMARY KEY (series_id, step))""",
    """CREATE TABLE checkpoints (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step bigint NOT NULL,
        timestamp double precision NOT NULL,
        reason text NOT NULL,
        metrics text NOT NULL,
        gradient_stats text NOT NULL,
        system_metrics text NOT NULL,
        extra text NOT NULL DEFAULT '{}')""",
    "CREATE INDEX checkpoints_by_run ON checkpoints (run_id, step)",
    """CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step bigint NOT NULL,
        kind text NOT NULL,
        data text NOT NULL)""",
    "CREATE INDEX events_by_run ON events (run_id, kind, step)",
    """CREATE TABLE samples (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step bigint NOT NULL,
        reason text NOT NULL,
        role text NOT NULL,
        name text NOT NULL,
        shape text NOT NULL,
        dtype text NOT NULL,
        vals text NOT NULL,
        truncated boolean NOT NULL)""",
    "CREATE INDEX samples_by_run ON samples (run_id, step)",
    """CREATE TABLE anomalies (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step bigint NOT NULL,
        anomaly_type text NOT NULL,
        severity text NOT NULL,
        subject text NOT NULL,
        value double precision,
        baseline double precision,
        threshold double precision,
        message text NOT NULL,
        detector text NOT NULL,
        end_step bigint NOT NULL,
        count bigint NOT NULL,
        open boolean NOT NULL,
        hint text NOT NULL,
        UNIQUE (run_id, anomaly_type, step, subject))""",
    "CREATE INDEX anomalies_by_run ON anomalies (run_id, step)",
    # The last flush each run committed: a flush retried after a commit whose answer was lost
    # finds its token here and is not written twice (`PostgresStorage.write_batch`).
    """CREATE TABLE flushes (
        run_id text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
        token text NOT NULL)""",
)

# Version 2: points in chunks (`tracer_postgres.chunks`) instead of a row per point: a fifth
# of the bytes, a history read of a million points in a few thousand rows, and per-chunk
# summaries from which a chart's reduction is answered. The points of version 1 move into
# chunks of CHUNK_POINTS in SQL (steps written out; the writer packs evenly spaced ones).
_FINITE = "value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"
_V2 = (
    """CREATE TABLE metric_chunks (
        series_id integer NOT NULL,
        first_step bigint NOT NULL,
        last_step bigint NOT NULL,
        count integer NOT NULL,
        steps bytea NOT NULL,
        vals bytea NOT NULL,
        last_value double precision NOT NULL,
        lowest double precision,
        highest double precision,
        low double precision,
        low_at integer,
        low_step bigint,
        high double precision,
        high_at integer,
        high_step bigint,
        nonfinite integer NOT NULL,
        PRIMARY KEY (series_id, first_step)) WITH (toast_tuple_target = 8160)""",
    f"""INSERT INTO metric_chunks ({COLUMNS})
        SELECT series_id, min(step), max(step), count(*),
            string_agg(int8send(step), '' ORDER BY step),
            string_agg(float8send(value), '' ORDER BY step),
            (array_agg(value ORDER BY step DESC))[1],
            min(value) FILTER (WHERE value <> 'NaN'::float8),
            max(value) FILTER (WHERE value <> 'NaN'::float8),
            min(value) FILTER (WHERE {_FINITE}),
            (array_agg(at ORDER BY value, step) FILTER (WHERE {_FINITE}))[1],
            (array_agg(step ORDER BY value, step) FILTER (WHERE {_FINITE}))[1],
            max(value) FILTER (WHERE {_FINITE}),
            (array_agg(at ORDER BY value DESC, step) FILTER (WHERE {_FINITE}))[1],
            (array_agg(step ORDER BY value DESC, step) FILTER (WHERE {_FINITE}))[1],
            count(*) FILTER (WHERE NOT {_FINITE})
        FROM (SELECT series_id, step, value,
                (row_number() OVER w - 1) / {CHUNK_POINTS} AS chunk,
                ((row_number() OVER w - 1) % {CHUNK_POINTS})::integer AS at
              FROM metric_points WINDOW w AS (PARTITION BY series_id ORDER BY step)) AS numbered
        GROUP BY series_id, chunk""",
    "DROP TABLE metric_points",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def _tables(cursor: Any, schema: str) -> set[str]:
    cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {row[0] for row in cursor.fetchall()}


def _version(cursor: Any, tables: set[str], shown: str, schema: str) -> int:
    """The schema's version, 0 for an empty schema; refuses one that is not Tracer's."""
    if MARK_TABLE not in tables:
        if tables:
            listed = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
            raise StorageError(
                f"{shown}: schema {schema!r} holds tables Tracer did not create ({listed}) and"
                f" no {MARK_TABLE} mark; Tracer leaves it untouched. Use an empty database or"
                " another schema (?schema=tracer)."
            )
        return 0
    cursor.execute(f"SELECT application, version FROM {MARK_TABLE}")
    rows = cursor.fetchall()
    if len(rows) != 1 or rows[0][0] != APPLICATION:
        raise StorageError(f"{shown}: {MARK_TABLE} is not Tracer's mark; left untouched")
    version = int(rows[0][1])
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{shown} has Tracer schema version {version}, newer than this tracer-postgres"
            f" understands ({SCHEMA_VERSION}); upgrade tracer-postgres to use it"
        )
    return version


def current_schema(cursor: Any) -> str:
    cursor.execute("SELECT current_schema()")
    row = cursor.fetchone()
    if row is None or row[0] is None:
        raise StorageError("the connection has no schema to create tables in (search_path)")
    return str(row[0])


def check(cursor: Any, shown: str) -> int:
    """The version of the schema `cursor` sees (read only, for readers); 0: nothing there
    (the schema named in the location does not exist, or holds nothing)."""
    cursor.execute("SELECT current_schema()")
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return 0
    schema = str(row[0])
    return _version(cursor, _tables(cursor, schema), shown, schema)


def migrate(connection: Any, shown: str) -> None:
    """Bring the connection's schema to `SCHEMA_VERSION` (creating it in an empty one)."""
    with connection.cursor() as cursor:
        current_schema(cursor)  # there is one to create tables in
        if check(cursor, shown) == SCHEMA_VERSION:
            return
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        schema = current_schema(cursor)
        version = _version(cursor, _tables(cursor, schema), shown, schema)  # another process
        for number in range(version, SCHEMA_VERSION):  # may have migrated it meanwhile
            for statement in MIGRATIONS[number]:
                cursor.execute(statement)
            logger.info("Migrated %s to Tracer schema version %d.", shown, number + 1)
        cursor.execute(
            f"INSERT INTO {MARK_TABLE} (application, version) VALUES (%s, %s)"
            " ON CONFLICT (application) DO UPDATE SET version = EXCLUDED.version",
            (APPLICATION, SCHEMA_VERSION),
        )
