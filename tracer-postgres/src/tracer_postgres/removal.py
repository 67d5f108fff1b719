"""Removing stored points: a run's, in batches (`tracer gc`, retention), and a resumed run's
after the step it resumed from (`rewind`).

A run of a billion points is never deleted in one statement: that would hold its locks and
write its WAL in one transaction. `delete_points` deletes `DELETE_BATCH` chunks of a series
(about half a million points) per transaction, by key range on the primary key's index; each
takes row locks only, so the writers of other runs (and readers) go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from tracer_postgres.chunk_writes import cut_after, refresh_summaries

DELETE_BATCH = 2_000  # chunks per transaction

Transaction = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


def delete_points(transaction: Transaction, series_id: int) -> int:
    """Delete every chunk of a series, `DELETE_BATCH` per transaction; returns how many."""
    deleted = 0
    while True:
        with transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM metric_chunks WHERE series_id = %s AND first_step <= (SELECT"
                " first_step FROM metric_chunks WHERE series_id = %s ORDER BY first_step"
                " OFFSET %s LIMIT 1)",
                (series_id, series_id, DELETE_BATCH - 1),
            )
            deleted += cursor.rowcount
            if cursor.rowcount < DELETE_BATCH:  # fewer left than a batch: the rest at once
                cursor = connection.execute(
                    "DELETE FROM metric_chunks WHERE series_id = %s", (series_id,)
                )
                return deleted + cursor.rowcount


def rewind(connection: psycopg.Connection[Any], run_id: str, after_step: int) -> None:
    """Delete what `run_id` stored at steps after `after_step` (in the caller's transaction),
    recompute the summaries of the series that lost points, and lower `total_steps`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT c.series_id FROM metric_chunks c JOIN series s"
            " ON s.id = c.series_id WHERE s.run_id = %s AND c.last_step > %s",
            (run_id, after_step),
        )
        touched = [row[0] for row in cursor.fetchall()]
        if touched:
            cut_after(cursor, touched, after_step)
            refresh_summaries(cursor, touched)
        for table in ("checkpoints", "events", "samples", "anomalies"):
            cursor.execute(
                f"DELETE FROM {table} WHERE run_id = %s AND step > %s", (run_id, after_step)
            )
        cursor.execute(
            "UPDATE anomalies SET end_step = %s WHERE run_id = %s AND end_step > %s",
            (after_step, run_id, after_step),
        )
        cursor.execute(
            "UPDATE runs SET total_steps = %s WHERE id = %s AND total_steps > %s",
            (after_step, run_id, after_step),
        )
