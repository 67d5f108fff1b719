"""The SQLite schema, its version (`PRAGMA user_version`) and the in-place migrations.

Each migration moves the file up one version inside the transaction that opens it, so a newer
library opens any older file, and a file from a newer library is refused rather than damaged.
Add a migration by appending a function; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tracer.storage.sqlite import codec

_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    notes TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    start_time REAL NOT NULL,
    end_time REAL,
    heartbeat REAL,
    heartbeat_interval REAL,
    host TEXT,
    pid INTEGER,
    rank INTEGER NOT NULL DEFAULT 0,
    world_size INTEGER NOT NULL DEFAULT 1,
    total_steps INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    UNIQUE (project, name)
);
CREATE INDEX runs_by_project ON runs (project, start_time);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    UNIQUE (run_id, name)
);
CREATE TABLE metric_chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    count INTEGER NOT NULL,
    steps BLOB,
    vals BLOB NOT NULL
);
CREATE INDEX metric_chunks_by_series ON metric_chunks (series_id, id);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    gradient_stats TEXT NOT NULL,
    system_metrics TEXT NOT NULL
);
CREATE INDEX checkpoints_by_run ON checkpoints (run_id, step);
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _add_series_summaries(conn: sqlite3.Connection) -> None:
    """v2: per-metric count/last/min/max kept on write, backfilled from the stored chunks."""
    for column in (
        "count INTEGER NOT NULL DEFAULT 0",
        "last_step INTEGER",
        "last_value BLOB",
        "min_value REAL",
        "max_value REAL",
    ):
        conn.execute(f"ALTER TABLE series ADD COLUMN {column}")
    series_ids = [row[0] for row in conn.execute("SELECT id FROM series")]
    for series_id in series_ids:
        rows = conn.execute(
            "SELECT first_step, last_step, count, steps, vals FROM metric_chunks"
            " WHERE series_id = ? ORDER BY id",
            (series_id,),
        ).fetchall()
        steps: list[int] = []
        values: list[float] = []
        for first, last, count, steps_blob, values_blob in rows:
            steps.extend(codec.decode_steps(first, last, count, steps_blob))
            values.extend(codec.decode_values(values_blob))
        if steps:
            steps, values = codec.normalize(steps, values)
            summary = summarize(steps, values)
            conn.execute(
                "UPDATE series SET count = ?, last_step = ?, last_value = ?, min_value = ?,"
                " max_value = ? WHERE id = ?",
                (*summary, series_id),
            )


def summarize(
    steps: list[int], values: list[float]
) -> tuple[int, int, bytes, float | None, float | None]:
    """(count, last_step, last_value_blob, min, max) of ascending points; NaN never a min/max."""
    total = sum(values)  # C loop; NaN only if a NaN is present (or inf + -inf)
    ordered = values if total == total else [v for v in values if v == v]
    return (
        len(steps),
        steps[-1],
        codec.encode([0], [values[-1]])[4],
        float(min(ordered)) if ordered else None,
        float(max(ordered)) if ordered else None,
    )


def _add_events_samples_and_checkpoint_extras(conn: sqlite3.Connection) -> None:
    """v3: step events, batch samples, and collector sections of checkpoints."""
    conn.execute("ALTER TABLE checkpoints ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY,"
        " run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " step INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX events_by_run ON events (run_id, kind, step)")
    conn.execute(
        "CREATE TABLE samples (id INTEGER PRIMARY KEY,"
        " run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " step INTEGER NOT NULL, reason TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,"
        " shape TEXT NOT NULL, dtype TEXT NOT NULL, vals TEXT NOT NULL,"
        " truncated INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX samples_by_run ON samples (run_id, step)")


def _add_anomalies_and_run_settings(conn: sqlite3.Connection) -> None:
    """v4: anomalies (unique per run, type, step and subject) and runs.settings."""
    conn.execute("ALTER TABLE runs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'")
    conn.execute(
        "CREATE TABLE anomalies (id INTEGER PRIMARY KEY,"
        " run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " step INTEGER NOT NULL, anomaly_type TEXT NOT NULL, severity TEXT NOT NULL,"
        " subject TEXT NOT NULL, value REAL, baseline REAL, threshold REAL,"
        " message TEXT NOT NULL, detector TEXT NOT NULL,"
        " UNIQUE (run_id, anomaly_type, step, subject))"
    )
    conn.execute("CREATE INDEX anomalies_by_run ON anomalies (run_id, step)")


def _add_anomaly_episodes(conn: sqlite3.Connection) -> None:
    """v5: anomalies are episodes: the last step seen, how many observations, whether still
    open, and what to try. A stored single-step anomaly becomes a closed one-step episode."""
    for column in (
        "end_step INTEGER",
        "count INTEGER NOT NULL DEFAULT 1",
        "open INTEGER NOT NULL DEFAULT 0",
        "hint TEXT NOT NULL DEFAULT ''",
    ):
        conn.execute(f"ALTER TABLE anomalies ADD COLUMN {column}")
    conn.execute("UPDATE anomalies SET end_step = step")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _add_series_summaries,
    _add_events_samples_and_checkpoint_extras,
    _add_anomalies_and_run_settings,
    _add_anomaly_episodes,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _columns_at(version: int) -> dict[str, set[str]]:
    """Tracer's tables and their columns at schema `version`, built by running the
    migrations on an empty in-memory database (so it can never drift from them)."""
    conn = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS[:version]:
            migration(conn)
        return _columns(conn)
    finally:
        conn.close()


def _columns(conn: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {
        table: {row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
        for table in tables
    }


def missing_for(conn: sqlite3.Connection, version: int) -> str:
    """What a Tracer file at schema `version` has that `conn`'s file lacks ("" when it has
    all of it): how a file from before Tracer set SQLite's application_id is told apart from
    another program's file with a matching user_version. Reads only."""
    actual = _columns(conn)
    gaps = []
    for table, columns in sorted(_columns_at(min(version, SCHEMA_VERSION)).items()):
        if table not in actual:
            gaps.append(f"no table {table}")
        elif columns - actual[table]:
            gaps.append(f"{table} lacks {', '.join(sorted(columns - actual[table]))}")
    return "; ".join(gaps)
