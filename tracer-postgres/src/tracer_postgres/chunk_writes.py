"""The statements that change `metric_chunks`, inside the caller's transaction: appending
chunks (binary COPY), merging points into steps already stored, cutting a series after a step,
and recomputing a series' summary from its chunks.

Chunks of a series never overlap (the readers rely on it). Appending is the usual write; a
write that reaches back into stored steps (a resumed run writing its steps again, a retried
flush) takes the chunks it overlaps out, merges them with its points (a later write of a step
wins) and puts them back re-cut, then recomputes the series' summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

import psycopg

from tracer_postgres.chunks import (
    CHUNK_POINTS,
    COLUMN_TYPES,
    COLUMNS,
    Chunk,
    decode_steps,
    make_chunks,
    unpack,
)

_COPY_CHUNKS = f"COPY metric_chunks ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
_RAW = "c.first_step, c.last_step, c.count, c.steps, c.vals"


def insert_chunks(cursor: psycopg.Cursor[Any], rows: Iterable[tuple[int, Chunk]]) -> None:
    """Copy (series id, chunk) rows into `metric_chunks` in one binary COPY."""
    with cursor.copy(_COPY_CHUNKS) as copy:
        copy.set_types(list(COLUMN_TYPES))
        for series_id, chunk in rows:
            copy.write_row(chunk.row(series_id))


def lock_series(
    cursor: psycopg.Cursor[Any], series_ids: Sequence[int]
) -> dict[int, tuple[Optional[int], Optional[tuple[Any, ...]]]]:
    """Lock these series until commit (a concurrent writer of one waits here) and return, by
    id, the last stored step and the raw last chunk when it holds fewer than `CHUNK_POINTS`
    (`first_step, last_step, count, steps, vals`; None when full or absent)."""
    cursor.execute(
        f"SELECT s.id, s.last_step, {_RAW} FROM series s LEFT JOIN LATERAL"
        " (SELECT * FROM metric_chunks m WHERE m.series_id = s.id"
        "   ORDER BY m.first_step DESC LIMIT 1) AS c ON c.count < %s"
        " WHERE s.id = ANY(%s) FOR NO KEY UPDATE OF s",
        (CHUNK_POINTS, list(series_ids)),
        binary=True,
    )
    return {
        row[0]: (row[1], None if row[2] is None else tuple(row[2:])) for row in cursor.fetchall()
    }


def delete_chunks(cursor: psycopg.Cursor[Any], keys: Sequence[tuple[int, int]]) -> None:
    """Delete the chunks named by (series id, first step)."""
    cursor.execute(
        "DELETE FROM metric_chunks m USING unnest(%s::integer[], %s::bigint[]) AS d(id, first)"
        " WHERE m.series_id = d.id AND m.first_step = d.first",
        ([key[0] for key in keys], [key[1] for key in keys]),
    )


def points_of(rows: Sequence[Sequence[Any]]) -> tuple[list[int], list[float]]:
    """The points of raw chunk rows (`first_step, last_step, count, steps, vals`)."""
    steps: list[int] = []
    values: list[float] = []
    for first, last, count, steps_blob, vals_blob in rows:
        steps.extend(decode_steps(first, last, count, steps_blob))
        values.extend(unpack("d", vals_blob))
    return steps, values


def merge_points(
    cursor: psycopg.Cursor[Any], series_id: int, steps: Sequence[int], values: Sequence[float]
) -> None:
    """Write points (ascending, unique steps) over a series' stored ones: the chunks their
    step range overlaps come out and go back merged, the new value of a step winning."""
    cursor.execute(
        f"DELETE FROM metric_chunks c WHERE series_id = %s AND last_step >= %s"
        f" AND first_step <= %s RETURNING {_RAW}",
        (series_id, int(steps[0]), int(steps[-1])),
        binary=True,
    )
    stored_steps, stored_values = points_of(sorted(cursor.fetchall()))
    merged = dict(zip(stored_steps, stored_values, strict=True))
    merged.update(zip(steps, values, strict=True))
    ordered = sorted(merged)
    chunks = make_chunks(ordered, [merged[step] for step in ordered])
    insert_chunks(cursor, ((series_id, chunk) for chunk in chunks))


def cut_after(cursor: psycopg.Cursor[Any], series_ids: Sequence[int], after_step: int) -> None:
    """Delete the points after `after_step` of these series (a chunk across it is re-cut)."""
    cursor.execute(
        f"DELETE FROM metric_chunks c WHERE series_id = ANY(%s) AND last_step > %s"
        f" RETURNING series_id, {_RAW}",
        (list(series_ids), after_step),
        binary=True,
    )
    kept: list[tuple[int, Chunk]] = []
    for series_id, *raw in cursor.fetchall():
        if raw[0] > after_step:
            continue  # wholly after the step
        steps, values = points_of([raw])
        keep = sum(1 for step in steps if step <= after_step)
        kept.extend((series_id, chunk) for chunk in make_chunks(steps[:keep], values[:keep]))
    if kept:
        insert_chunks(cursor, kept)


def refresh_summaries(cursor: psycopg.Cursor[Any], series_ids: Sequence[int]) -> None:
    """Recompute the summaries `list_metrics` reads (count, last point, lowest and highest
    non-NaN value) of these series from their chunks."""
    cursor.execute(
        "UPDATE series s SET count = a.n, last_step = a.last, min_value = a.lowest,"
        " max_value = a.highest,"
        " last_value = (SELECT c.last_value FROM metric_chunks c WHERE c.series_id = s.id"
        "   ORDER BY c.first_step DESC LIMIT 1)"
        " FROM (SELECT u.id, coalesce(sum(c.count), 0) AS n, max(c.last_step) AS last,"
        "   min(c.lowest) AS lowest, max(c.highest) AS highest"
        "   FROM unnest(%s::integer[]) AS u(id)"
        "   LEFT JOIN metric_chunks c ON c.series_id = u.id GROUP BY u.id) AS a"
        " WHERE s.id = a.id",
        (list(series_ids),),
    )
