"""The reduction of a metric history to drawable size, shared by the HTML report,
`tracer plot` and the dashboard, so the three views of a run agree.

The rule itself (`reduce_points`: min and max per bucket, first and last point, every
non-finite point kept; see its module for the details and the cost) lives on the storage floor
in `tracer.storage.reduction`, so a backend can answer it where the points are
(`StorageBackend.get_metric_reduced`); it is re-exported here for the views.

`downsample` is the report's view of the same reduction: finite points, NaN as gaps, and
the non-finite stretches as `Span`s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tracer.storage.reduction import DEFAULT_POINTS, Reduced, reduce_points

__all__ = [
    "BUCKETS",
    "DEFAULT_POINTS",
    "Points",
    "Reduced",
    "Span",
    "downsample",
    "kind_of",
    "reduce_points",
    "spans_of",
]

BUCKETS = 600  # the report's buckets per series (`downsample`)


def kind_of(value: float) -> str:
    """ "NaN", "+Inf" or "-Inf" for a non-finite value."""
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


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
