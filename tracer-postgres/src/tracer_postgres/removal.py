"""Removing stored points: a run's, in batches (`tracer gc`, retention), and a resumed run's
after the step it resumed from (`rewind`).

A run of a billion points is never deleted in one statement: that would hold its locks and
write its WAL in one transaction. `delete_points` deletes `DELETE_BATCH` points of a series
per transaction, by key range on the primary key's index; each takes row locks only, so the
writers of other runs (and readers) go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

DELETE_BATCH = 50_000

Transaction = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


def delete_points(transaction: Transaction, series_id: int) -> int:
    """Delete every point of a series, `DELETE_BATCH` per transaction; returns how many."""
    deleted = 0
    while True:
        with transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM metric_points WHERE series_id = %s AND step <= (SELECT step FROM"
                " metric_points WHERE series_id = %s ORDER BY step OFFSET %s LIMIT 1)",
                (series_id, series_id, DELETE_BATCH - 1),
            )
            deleted += cursor.rowcount
            if cursor.rowcount < DELETE_BATCH:  # fewer left than a batch: the rest at once
                cursor = connection.execute(
                    "DELETE FROM metric_points WHERE series_id = %s", (series_id,)
                )
                return deleted + cursor.rowcount


def rewind(connection: psycopg.Connection[Any], run_id: str, after_step: int) -> None:
    """Delete what `run_id` stored at steps after `after_step` (in the caller's transaction),
    recompute the summaries of the series that lost points, and lower `total_steps`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH gone AS (DELETE FROM metric_points p USING series s"
            " WHERE s.id = p.series_id AND s.run_id = %s AND p.step > %s RETURNING p.series_id)"
            " SELECT DISTINCT series_id FROM gone",
            (run_id, after_step),
        )
        touched = [row[0] for row in cursor.fetchall()]
        if touched:
            cursor.execute(
                "UPDATE series s SET count = a.n, last_step = a.last,"
                " last_value = (SELECT value FROM metric_points p WHERE p.series_id = s.id"
                "   ORDER BY step DESC LIMIT 1),"
                " min_value = a.low, max_value = a.high"
                " FROM (SELECT u.id, count(p.step) AS n, max(p.step) AS last,"
                "   min(p.value) FILTER (WHERE p.value <> 'NaN') AS low,"
                "   max(p.value) FILTER (WHERE p.value <> 'NaN') AS high"
                "   FROM unnest(%s::integer[]) AS u(id)"
                "   LEFT JOIN metric_points p ON p.series_id = u.id GROUP BY u.id) AS a"
                " WHERE s.id = a.id",
                (touched,),
            )
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
