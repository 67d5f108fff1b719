"""Cutting a run back to a step: what `SQLiteStorage.rewind_run` does inside one transaction.

A run resumed from an earlier checkpoint than its last step trains the steps after that
checkpoint again; the points, checkpoints, events, samples and anomaly episodes it stored
for them the first time belong to a history that was abandoned. Metric chunks past the step
are deleted, a chunk that straddles it is re-encoded with the points up to it, and the
series' summary (count, last point, min, max) is recomputed from what remains.
"""

from __future__ import annotations

import sqlite3

from tracer.storage.sqlite import codec, schema

_STEP_TABLES = ("checkpoints", "events", "samples")


def rewind(conn: sqlite3.Connection, run_id: str, after_step: int) -> None:
    """Delete what `run_id` stored at steps after `after_step`; `total_steps` at most it."""
    series_ids = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT c.series_id FROM metric_chunks c JOIN series s ON s.id = c.series_id"
            " WHERE s.run_id = ? AND c.last_step > ?",
            (run_id, after_step),
        )
    ]
    for series_id in series_ids:
        _rewind_series(conn, series_id, after_step)
    for table in _STEP_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", (run_id, after_step))
    conn.execute("DELETE FROM anomalies WHERE run_id = ? AND step > ?", (run_id, after_step))
    conn.execute(
        "UPDATE anomalies SET end_step = ? WHERE run_id = ? AND end_step > ?",
        (after_step, run_id, after_step),
    )
    conn.execute(
        "UPDATE runs SET total_steps = ? WHERE id = ? AND total_steps > ?",
        (after_step, run_id, after_step),
    )


def _rewind_series(conn: sqlite3.Connection, series_id: int, after_step: int) -> None:
    conn.execute(
        "DELETE FROM metric_chunks WHERE series_id = ? AND first_step > ?", (series_id, after_step)
    )
    straddling = conn.execute(
        "SELECT id, first_step, last_step, count, steps, vals FROM metric_chunks"
        " WHERE series_id = ? AND last_step > ?",
        (series_id, after_step),
    ).fetchall()
    for chunk_id, first, last, count, steps_blob, values_blob in straddling:
        steps = codec.decode_steps(first, last, count, steps_blob)
        values = codec.decode_values(values_blob)
        kept = [
            (step, value) for step, value in zip(steps, values, strict=True) if step <= after_step
        ]
        kept_steps, kept_values = [s for s, _ in kept], [v for _, v in kept]
        conn.execute(
            "UPDATE metric_chunks SET first_step = ?, last_step = ?, count = ?, steps = ?,"
            " vals = ? WHERE id = ?",
            (*codec.encode(kept_steps, kept_values), chunk_id),
        )
    _resummarize(conn, series_id)


def _resummarize(conn: sqlite3.Connection, series_id: int) -> None:
    """The series' summary from all its remaining points (rare: only after a rewind)."""
    steps: list[int] = []
    values: list[float] = []
    for first, last, count, steps_blob, values_blob in conn.execute(
        "SELECT first_step, last_step, count, steps, vals FROM metric_chunks"
        " WHERE series_id = ? ORDER BY id",
        (series_id,),
    ):
        steps.extend(codec.decode_steps(first, last, count, steps_blob))
        values.extend(codec.decode_values(values_blob))
    if not steps:
        conn.execute(
            "UPDATE series SET count = 0, last_step = NULL, last_value = NULL,"
            " min_value = NULL, max_value = NULL WHERE id = ?",
            (series_id,),
        )
        return
    steps, values = codec.normalize(steps, values)
    count, last_step, last_value, low, high = schema.summarize(steps, values)
    conn.execute(
        "UPDATE series SET count = ?, last_step = ?, last_value = ?, min_value = ?,"
        " max_value = ? WHERE id = ?",
        (count, last_step, last_value, low, high, series_id),
    )
