"""A chart's reduction (`tracer.storage.reduction.reduce_points`) answered from the chunks'
summaries, reading only the points it must: `PostgresStorage.get_metric_reduced`.

The rule cuts a window into buckets of equal step range and keeps, per bucket, the first
point holding the lowest and the first holding the highest finite value, every non-finite
point, and the window's first and last points. A chunk that lies inside one bucket and holds
only finite values contributes exactly its summary (lowest and highest finite value, with the
offset and step of the first point holding each), so only these chunks' points are read:
the first and last chunk of the window (they hold its first and last point, and may reach
past it), chunks that straddle a bucket's bound, and chunks that hold a NaN or an Inf. For
10 runs of a million points reduced to 1,000 each, that is about an eighth of the points, and
the summaries come back packed (one `bytea` of fixed-size records, see `_SUMMARIES`).

The result is the one `reduce_points` gives for the same window, bit for bit:
`StorageConformance` checks it on awkward histories.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from tracer.storage.reduction import Reduced, bucket_starts, reduce_points
from tracer_postgres.chunks import decode_steps, unpack

Read = Callable[..., list[Any]]

# Per chunk overlapping the window, in step order: one fixed-size binary record (`_RECORD`)
# of its summary, all of them concatenated into one bytea by one ordered aggregate.
_SUMMARIES = (
    "SELECT min(series_id), string_agg({record}, '' ORDER BY first_step) FROM metric_chunks"
    " WHERE series_id = (SELECT id FROM series WHERE run_id = %s AND name = %s){bounds}"
)
_FIELDS = (
    "int8send(first_step)", "int8send(last_step)", "int4send(count)", "int4send(nonfinite)",
    "float8send(coalesce(low, 'NaN'))", "int4send(coalesce(low_at, -1))",
    "int8send(coalesce(low_step, 0))", "float8send(coalesce(high, 'NaN'))",
    "int4send(coalesce(high_at, -1))", "int8send(coalesce(high_step, 0))",
)  # fmt: skip
_RECORD = struct.Struct(">qqiidiqdiq")  # the fields above, big-endian as PostgreSQL sends
_RAW = (
    "SELECT first_step, last_step, count, steps, vals FROM metric_chunks"
    " WHERE series_id = %s AND first_step = ANY(%s) ORDER BY first_step"
)


@dataclass
class _Bucket:
    """What a bucket keeps so far: its first lowest and first highest finite point, and
    every non-finite point, as (position in the window, step, value)."""

    low: Optional[tuple[int, int, float]] = None
    high: Optional[tuple[int, int, float]] = None
    nonfinite: list[tuple[int, int, float]] = field(default_factory=list)

    def offer(self, low: tuple[int, int, float], high: tuple[int, int, float]) -> None:
        """Candidates from a later stretch of the bucket: an equal value never wins, as the
        first point holding the extreme is the one kept."""
        if self.low is None or low[2] < self.low[2]:
            self.low = low
        if self.high is None or high[2] > self.high[2]:
            self.high = high


def reduced_window(
    read: Read,
    run_id: str,
    metric: str,
    start: Optional[int],
    end: Optional[int],
    points: int,
    window: Callable[[], tuple[Sequence[int], Sequence[float]]],
) -> Reduced:
    """`reduce_points` of the window [start, end] of a series (`window` reads it whole, for
    windows short enough to keep whole)."""
    points = max(points, 2)
    bounds = ""
    params: list[Any] = [run_id, metric]
    if start is not None:
        bounds += " AND last_step >= %s"
        params.append(start)
    if end is not None:
        bounds += " AND first_step <= %s"
        params.append(end)
    found = _summaries(read, bounds, params)
    if found is None:
        return reduce_points([], [], points)
    series_id, summaries = found
    firsts, lasts, counts, nonfinite = summaries[:4]
    if sum(counts) <= points:
        steps, values = window()  # short enough to keep whole
        return reduce_points(steps, values, points)
    lows, low_ats, low_steps, highs, high_ats, high_steps = summaries[4:]

    raw = _raw_chunks(read, series_id, [firsts[0], firsts[-1]], start, end)
    first_steps, last_steps = raw[firsts[0]][0], raw[firsts[-1]][0]
    count = sum(counts[1:-1]) + len(first_steps) + (len(last_steps) if len(firsts) > 1 else 0)
    if count <= points or not first_steps or not last_steps:
        steps, values = window()
        return reduce_points(steps, values, points)
    starts = bucket_starts(first_steps[0], last_steps[-1], max(1, points // 2))

    def bucket_of(step: int) -> int:  # buckets 1.. start at `starts`; the step is in the last
        return bisect_right(starts, step)  # whose start it reaches

    summarized = [bad == 0 for bad in nonfinite]  # NaN or Inf inside: read the points
    summarized[0] = summarized[-1] = False
    for bound in starts:  # the chunk reaching a bucket's start from below straddles it
        straddling = bisect_left(lasts, bound)
        if straddling < len(firsts) and firsts[straddling] < bound:
            summarized[straddling] = False
    wanted = [firsts[i] for i, whole in enumerate(summarized) if not whole and firsts[i] not in raw]
    raw.update(_raw_chunks(read, series_id, wanted, start, end))

    buckets: dict[int, _Bucket] = {}
    position = 0
    for i, first in enumerate(firsts):
        if summarized[i]:
            bucket = buckets.setdefault(bucket_of(first), _Bucket())
            bucket.offer(
                (position + low_ats[i], low_steps[i], lows[i]),
                (position + high_ats[i], high_steps[i], highs[i]),
            )
            position += counts[i]
            continue
        steps, values = raw[first]
        _add_points(buckets, starts, bucket_of, position, steps, values)
        position += len(steps)
    ends = ((0, first_steps[0], raw[firsts[0]][1][0]),
            (count - 1, last_steps[-1], raw[firsts[-1]][1][-1]))  # fmt: skip
    return _assemble(buckets, ends, count)


def _summaries(
    read: Read, bounds: str, params: Sequence[Any]
) -> Optional[tuple[int, list[tuple[Any, ...]]]]:
    """The series id and the summaries of the chunks in the window, one tuple per `_FIELDS`
    (first steps, last steps, counts, ...), in step order; None when no chunk is there."""
    query = _SUMMARIES.format(record=" || ".join(_FIELDS), bounds=bounds)
    rows = read(query, params, binary=True)
    if not rows or rows[0][1] is None:
        return None
    return int(rows[0][0]), list(zip(*_RECORD.iter_unpack(rows[0][1]), strict=True))


def _raw_chunks(
    read: Read, series_id: int, firsts: Sequence[int], start: Optional[int], end: Optional[int]
) -> dict[int, tuple[Sequence[int], Sequence[float]]]:
    """The points of the chunks starting at `firsts`, cut to the window, by first step."""
    if not firsts:
        return {}
    out: dict[int, tuple[Sequence[int], Sequence[float]]] = {}
    for first, last, count, steps_blob, vals_blob in read(
        _RAW, [series_id, sorted(set(firsts))], binary=True
    ):
        steps: Sequence[int] = decode_steps(first, last, count, steps_blob)
        values: Sequence[float] = unpack("d", vals_blob)
        low = 0 if start is None else bisect_left(steps, start)
        high = len(steps) if end is None else bisect_right(steps, end)
        if (low, high) != (0, len(steps)):
            steps, values = steps[low:high], values[low:high]
        out[first] = (steps, values)
    return out


def _add_points(
    buckets: dict[int, _Bucket],
    starts: Sequence[float],
    bucket_of: Callable[[int], int],
    position: int,
    steps: Sequence[int],
    values: Sequence[float],
) -> None:
    """Offer a chunk's points to the buckets they fall in, one stretch per bucket."""
    if not steps:
        return
    first_bucket, last_bucket = bucket_of(steps[0]), bucket_of(steps[-1])
    for number in range(first_bucket, last_bucket + 1):
        low = 0 if number == first_bucket else bisect_left(steps, starts[number - 1])
        high = len(steps) if number == last_bucket else bisect_left(steps, starts[number])
        if low >= high:
            continue
        stretch = values[low:high]
        bucket = buckets.setdefault(number, _Bucket())
        total = sum(stretch)
        if total - total == 0.0:
            least, most = min(stretch), max(stretch)
            at_least, at_most = stretch.index(least), stretch.index(most)
        else:
            finite = [v for v in stretch if v - v == 0.0]
            for offset, value in enumerate(stretch):
                if value - value != 0.0:
                    bucket.nonfinite.append((position + low + offset, steps[low + offset], value))
            if not finite:
                continue
            least, most = min(finite), max(finite)
            at_least = next(i for i, v in enumerate(stretch) if v == least)
            at_most = next(i for i, v in enumerate(stretch) if v == most)
        bucket.offer(
            (position + low + at_least, steps[low + at_least], least),
            (position + low + at_most, steps[low + at_most], most),
        )


def _assemble(
    buckets: dict[int, _Bucket], ends: Sequence[tuple[int, int, float]], count: int
) -> Reduced:
    """The kept points of every bucket in step order, as `reduce_points` lays them out."""
    kept_steps: list[int] = []
    kept_values: list[float] = []
    mins: list[float] = []
    maxs: list[float] = []
    indices: list[int] = []
    numbers = sorted(buckets)
    for number in numbers:
        bucket = buckets[number]
        picked = {point[0]: point for point in bucket.nonfinite}
        for point in (bucket.low, bucket.high):
            if point is not None:
                picked[point[0]] = point
        if number == numbers[0]:
            picked[ends[0][0]] = ends[0]
        if number == numbers[-1]:
            picked[ends[1][0]] = ends[1]
        low = bucket.low[2] if bucket.low is not None else math.nan
        high = bucket.high[2] if bucket.high is not None else math.nan
        for index in sorted(picked):
            _, step, value = picked[index]
            indices.append(index)
            kept_steps.append(int(step))
            kept_values.append(value)
            mins.append(low)
            maxs.append(high)
    nonfinite = [n for n, v in enumerate(kept_values) if v - v != 0.0]
    return Reduced(kept_steps, kept_values, mins, maxs, indices, count, True, nonfinite)
