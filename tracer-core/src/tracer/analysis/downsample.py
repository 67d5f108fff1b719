"""The one reduction of a metric history to drawable size, shared by the HTML report,
`tracer plot` and the dashboard, so the three views of a run agree.

The rule (`reduce_points`): a window of at most `points` points is kept whole. A longer one is cut
into about `points / 2` buckets of equal step range; each bucket keeps the point holding its
lowest and the point holding its highest finite value (so a one-step spike survives, at its
true step), the window's first and last points are always kept, and EVERY non-finite point
is kept, never dropped and never averaged (a NaN is the one thing a reader must not miss).

Cost: C-level passes only for the usual bucket. `sum` of a bucket is finite exactly when
every value in it is (or the sum overflows, which only costs the slow path), tested with
`total - total == 0.0`; then `min`, `max` and `index` find the extremes. Only buckets that
fail the test are walked point by point. A million points reduce to a thousand in well under
a tenth of a second.

`downsample` is the report's view of the same reduction: finite points, NaN as gaps, and
the non-finite stretches as `Span`s.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

DEFAULT_POINTS = 1000  # points kept per window by `reduce_points`: one min/max pair per pixel
BUCKETS = 600  # the report's buckets per series (`downsample`)


def kind_of(value: float) -> str:
    """ "NaN", "+Inf" or "-Inf" for a non-finite value."""
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


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
    first = steps[0]
    width = (steps[-1] - first) / buckets
    bounds = [0, *(bisect_left(steps, first + width * k) for k in range(1, buckets)), count]
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


# -- the report's view ------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """Consecutive non-finite points of one kind ("NaN", "+Inf" or "-Inf")."""

    kind: str
    first: int
    last: int
    count: int


@dataclass(frozen=True)
class Points:
    """A drawable series: finite points in step order, NaN = a gap, non-finite spans apart."""

    steps: list[int]
    values: list[float]
    spans: list[Span]
    count: int  # points in the full history


def spans_of(reduced: Reduced, min_gap: float = 0.0) -> list[Span]:
    """The non-finite stretches of a reduction (every non-finite point is kept, so they are
    exact); stretches of one kind closer than `min_gap` steps are merged (about a pixel)."""
    stretches: list[tuple[str, int, int, int]] = []  # kind, first step, last step, count
    previous = -2
    for n in reduced.nonfinite:
        kind, step, index = kind_of(reduced.values[n]), reduced.steps[n], reduced.indices[n]
        if stretches and stretches[-1][0] == kind and previous == index - 1:
            _, first, _, count = stretches[-1]
            stretches[-1] = (kind, first, step, count + 1)
        else:
            stretches.append((kind, step, step, 1))
        previous = index
    merged: list[tuple[str, int, int, int]] = []
    for kind, first, last, count in stretches:
        near = next(
            (
                i
                for i in range(len(merged) - 1, max(len(merged) - 4, -1), -1)
                if merged[i][0] == kind
            ),
            None,
        )
        if near is not None and first - merged[near][2] <= min_gap:
            _, start, _, before = merged[near]
            merged[near] = (kind, start, last, before + count)
        else:
            merged.append((kind, first, last, count))
    return [Span(*span) for span in merged]


def downsample(steps: Sequence[int], values: Sequence[float], buckets: int = BUCKETS) -> Points:
    """At most about 2 x `buckets` finite points of a history (`reduce_points` with that budget),
    for drawing: a stretch of non-finite points becomes NaN gap marks at its ends (the
    line breaks there) and a `Span`."""
    reduced = reduce_points(steps, values, 2 * buckets)
    if not reduced.count:
        return Points([], [], [], 0)
    min_gap = (reduced.steps[-1] - reduced.steps[0]) / max(buckets, 1)
    out_steps: list[int] = []
    out_values: list[float] = []
    previous_bad = False
    last = len(reduced.steps) - 1
    for n, (step, value) in enumerate(zip(reduced.steps, reduced.values, strict=True)):
        if value - value == 0.0:
            out_steps.append(int(step))
            out_values.append(float(value))
            previous_bad = False
            continue
        next_bad = n < last and reduced.values[n + 1] - reduced.values[n + 1] != 0.0
        if not (previous_bad and next_bad):  # the ends of a non-finite stretch
            out_steps.append(int(step))
            out_values.append(math.nan)
        previous_bad = True
    return Points(out_steps, out_values, spans_of(reduced, min_gap), reduced.count)
