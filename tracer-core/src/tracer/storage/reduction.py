"""The one reduction of a metric history to drawable size (`reduce_points`), on the storage
floor so that a backend can answer it where the points live (`StorageBackend.get_metric_reduced`:
PostgreSQL reduces from per-chunk summaries and reads only the chunks it must); the report,
`tracer plot` and the dashboard use it through `tracer.analysis.downsample`, so the views of a
run agree.

The rule: a window of at most `points` points is kept whole. A longer one is cut into about
`points / 2` buckets of equal step range (bucket k starts at the first step >= first +
width * k, width = (last - first) / buckets); each bucket keeps the point holding its lowest and
the point holding its highest finite value (the first such point when several tie, so a
one-step spike survives, at its true step), the window's first and last points are always
kept, and EVERY non-finite point is kept, never dropped and never averaged (a NaN is the one
thing a reader must not miss).

Cost: C-level passes only for the usual bucket. `sum` of a bucket is finite exactly when
every value in it is (or the sum overflows, which only costs the slow path), tested with
`total - total == 0.0`; then `min`, `max` and `index` find the extremes. Only buckets that
fail the test are walked point by point. A million points reduce to a thousand in well under
a tenth of a second.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

DEFAULT_POINTS = 1000  # points kept per window by `reduce_points`: one min/max pair per pixel


def bucket_starts(first: int, last: int, buckets: int) -> list[float]:
    """The lower step bound of buckets 1 .. buckets-1 of a window from `first` to `last` (a
    step belongs to the last bucket whose bound it reaches): the one float formula every
    implementation of the rule must use, so buckets agree to the last step."""
    width = (last - first) / buckets
    return [first + width * k for k in range(1, buckets)]


@dataclass(frozen=True)
class Reduced:
    """Points kept of a window, in step order.

    `values` are as stored (NaN and +-Inf included); `mins`/`maxs` are, per kept point, the
    lowest and highest finite value of the bucket it stands for (NaN when the bucket has no
    finite value); unreduced, they equal `values`. `indices` are the kept points' positions
    in the window (consecutive non-finite indices are one stretch); `nonfinite` lists the
    positions in `steps` of every non-finite point.
    """

    steps: list[int]
    values: list[float]
    mins: list[float]
    maxs: list[float]
    indices: list[int]
    count: int  # points in the window
    reduced: bool
    nonfinite: list[int] = field(default_factory=list)


def _finite(total: float) -> bool:
    return total - total == 0.0  # False for NaN and +-Inf


def reduce_points(
    steps: Sequence[int], values: Sequence[float], points: int = DEFAULT_POINTS
) -> Reduced:
    """The points to draw of a window (`steps` ascending, `values` aligned); see the module
    docstring for the rule. `points` is the budget of finite points (at least 2)."""
    count = len(values)
    points = max(points, 2)
    if count <= points:
        kept_values = list(values)
        nonfinite = [i for i, v in enumerate(kept_values) if v - v != 0.0]
        return Reduced(
            list(steps), kept_values, kept_values, kept_values, list(range(count)), count,
            False, nonfinite,
        )  # fmt: skip
    buckets = max(1, points // 2)
    starts = bucket_starts(steps[0], steps[-1], buckets)
    bounds = [0, *(bisect_left(steps, start) for start in starts), count]
    indices: list[int] = []
    mins: list[float] = []
    maxs: list[float] = []
    for start, end in pairwise(bounds):
        if start >= end:
            continue
        chunk = values[start:end]
        if _finite(sum(chunk)):
            low, high = min(chunk), max(chunk)
            picked = {chunk.index(low), chunk.index(high)}
        else:
            picked, low, high = _walk(chunk)
        if start == 0:
            picked.add(0)
        if end == count:
            picked.add(end - start - 1)
        for offset in sorted(picked):
            indices.append(start + offset)
            mins.append(low)
            maxs.append(high)
    kept_values = [values[i] for i in indices]
    return Reduced(
        [int(steps[i]) for i in indices], kept_values, mins, maxs, indices, count, True,
        [n for n, v in enumerate(kept_values) if v - v != 0.0],
    )  # fmt: skip


def _walk(chunk: Sequence[float]) -> tuple[set[int], float, float]:
    """A bucket holding non-finite values (or finite ones whose sum overflows): every
    non-finite offset, and the offsets of the finite min and max; (picked, low, high)."""
    picked = {i for i, v in enumerate(chunk) if v - v != 0.0}
    finite = [v for v in chunk if v - v == 0.0]
    if not finite:
        return picked, math.nan, math.nan
    low, high = min(finite), max(finite)
    for target in (low, high):
        picked.add(next(i for i, v in enumerate(chunk) if v == target))
    return picked, low, high
