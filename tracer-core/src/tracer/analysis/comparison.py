"""How two runs' histories of one metric compare, for `QueryEngine.compare_runs` and the
dashboard's compare view: each history's statistics (NaN and infinities counted apart, the
stored summary used where it answers) and the first common step where they differ by more
than a relative tolerance, found at C speed on the bit patterns before any exact test.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from itertools import compress, count, islice, repeat
from operator import le, mul, ne, not_, sub
from typing import Any, Optional

from tracer.records import MetricSummary


def first_divergence(
    steps_a: Sequence[int],
    values_a: Sequence[float],
    steps_b: Sequence[int],
    values_b: Sequence[float],
    tolerance: float = 0.05,
) -> Optional[int]:
    """The first common step where two histories differ by more than `tolerance` (relative),
    as `QueryEngine.compare_runs` reports it, for a caller that holds both histories already
    (the dashboard's compare view reads each run once for its curve and this)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    a = {"steps": steps_a, "values": values_a}
    return first_divergence_between(a, {"steps": steps_b, "values": values_b}, tolerance)


def describe(values: Sequence[float], summary: Optional[MetricSummary] = None) -> dict[str, float]:
    """final, min, max and mean (of the finite values) and count of one history.

    C-level passes only: `fsum` is finite exactly when every value is, the usual case; only a
    history holding NaN or +-Inf is filtered first. The min and max kept on write (`summary`)
    are used when the history is all finite, saving two passes.
    """
    if not values:
        nan = math.nan
        return {"final": nan, "min": nan, "max": nan, "mean": nan, "count": 0}
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):  # finite values overflowing; inf + -inf
        total = math.nan
    finite = values
    if not math.isfinite(total):
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            nan = math.nan
            return {"final": values[-1], "min": nan, "max": nan, "mean": nan, "count": len(values)}
        total = math.nan
    if finite is values and summary is not None and summary["count"] == len(values):
        low, high = summary["min_value"], summary["max_value"]
    else:
        low, high = min(finite), max(finite)
    return {
        "final": values[-1],
        "min": low,
        "max": high,
        "mean": _mean(finite, total),
        "count": len(values),
    }


def _mean(finite: Sequence[float], total: float) -> float:
    """The mean of finite values; `total` is their fsum when known (else NaN)."""
    if math.isfinite(total):
        return total / len(finite)
    try:
        return math.fsum(finite) / len(finite)
    except OverflowError:  # the sum overflows where the mean does not
        count = len(finite)
        return math.fsum(v / count for v in finite)


def _differs(mine: float, theirs: float, tolerance: float) -> bool:
    """Whether two values differ by more than `tolerance`, relative to the larger magnitude
    (absolute 1e-12 x tolerance near zero). NaN on both sides agrees, on one side differs;
    equal infinities agree, an infinity against anything else differs."""
    if mine != mine or theirs != theirs:
        return not (mine != mine and theirs != theirs)
    return not math.isclose(mine, theirs, rel_tol=tolerance, abs_tol=tolerance * 1e-12)


def _common_points(a: Any, b: Any) -> tuple[Sequence[int], Sequence[float], Sequence[float]]:
    """(steps, values of a, values of b) at the steps both histories hold, in step order."""
    if a["steps"] == b["steps"]:  # the usual case: same steps
        return a["steps"], a["values"], b["values"]
    other = dict(zip(b["steps"], b["values"], strict=True))
    mine = dict(zip(a["steps"], a["values"], strict=True))
    steps = [step for step in a["steps"] if step in other]
    return steps, [mine[s] for s in steps], [other[s] for s in steps]


def _word_view(values: Sequence[float]) -> Optional[memoryview]:
    """A packed float64 history as a view of 64-bit words (no copy), else None: comparing
    two such views is a C loop over machine words, bit for bit."""
    if isinstance(values, array) and values.typecode == "d":
        return memoryview(values).cast("B").cast("Q")
    return None


def _first_unequal(mine: Sequence[float], theirs: Sequence[float]) -> Optional[int]:
    """The first index where the two differ (None if nowhere): where their bits differ,
    found by bisecting word views of packed histories (a few C-level compares), else the
    first pair that is not `==`. Either is where the exact comparison may start: the pairs
    before it are bit-identical or equal, which never differ under `_differs`."""
    a, b = _word_view(mine), _word_view(theirs)
    if a is None or b is None or len(a) != len(b):
        return next(compress(count(), map(ne, mine, theirs)), None)
    if a == b:
        return None
    low, high = 0, len(a)  # [0, low) is identical; the first difference is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


def first_divergence_between(a: Any, b: Any, tolerance: float) -> Optional[int]:
    """The first common step where the two histories differ (`_differs`), or None.

    No Python-level loop over the usual pairs, only C-level passes: one finds the first pair
    not bit-identical (`_first_unequal`: all that identical histories cost); from there a
    conservative closeness test, |a - b| - tolerance x |a| <= 0 (false for NaN and
    infinities too, and never true where `_differs` is), flags the pairs that get the exact
    test.
    """
    steps, mine, theirs = _common_points(a, b)
    start = _first_unequal(mine, theirs)
    if start is None:
        return None
    gaps = map(abs, map(sub, islice(mine, start, None), islice(theirs, start, None)))
    allowed = map(mul, map(abs, islice(mine, start, None)), repeat(tolerance))
    close = map(le, map(sub, gaps, allowed), repeat(0.0))
    for index in compress(count(start), map(not_, close)):
        if _differs(mine[index], theirs[index], tolerance):
            return int(steps[index])
    return None
