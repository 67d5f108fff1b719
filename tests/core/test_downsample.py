"""The one reduction behind the report, `tracer plot` and the dashboard: min/max per bucket,
first and last point, and every non-finite point kept."""

from __future__ import annotations

import math
from array import array

from tracer.analysis.downsample import downsample, reduce_points

N = 200_000
SPIKE, NAN_AT, INF_AT = 123_457, 150_001, 160_000


def _history() -> tuple[range, array]:  # type: ignore[type-arg]
    values = array("d", (1.0 + (i % 97) * 1e-3 for i in range(N)))
    values[SPIKE] = 50.0
    values[NAN_AT] = math.nan
    values[INF_AT] = math.inf
    values[INF_AT + 1] = -math.inf
    return range(N), values


def test_short_window_is_returned_whole() -> None:
    reduced = reduce_points([0, 5, 9], [1.0, math.nan, 2.0], points=3)
    assert not reduced.reduced and reduced.steps == [0, 5, 9]
    assert reduced.mins == reduced.values == reduced.maxs
    assert reduced.nonfinite == [1] and reduced.count == 3


def test_reduction_keeps_spike_ends_and_every_nonfinite_point_at_every_zoom() -> None:
    steps, values = _history()
    for start, end in ((0, N), (100_000, 170_000), (120_000, 125_000), (SPIKE - 3, SPIKE + 3)):
        window_steps, window_values = steps[start:end], values[start:end]
        reduced = reduce_points(window_steps, window_values, points=500)
        assert reduced.reduced == (end - start > 500)
        assert len(reduced.steps) <= 500 + 2 + len(reduced.nonfinite)
        assert reduced.steps[0] == start and reduced.steps[-1] == end - 1
        assert reduced.steps == sorted(set(reduced.steps))
        if start <= SPIKE < end:
            assert reduced.values[reduced.steps.index(SPIKE)] == 50.0
        bad = {reduced.steps[n] for n in reduced.nonfinite}
        assert bad == {s for s in (NAN_AT, INF_AT, INF_AT + 1) if start <= s < end}


def test_bucket_min_and_max_travel_with_each_point() -> None:
    steps, values = _history()
    reduced = reduce_points(steps, values, points=100)
    spike = reduced.steps.index(SPIKE)
    assert reduced.maxs[spike] == 50.0 and reduced.mins[spike] == 1.0
    assert all(math.isfinite(v) for v in reduced.mins + reduced.maxs)


def test_only_nonfinite_and_overflowing_buckets() -> None:
    values = [math.nan] * 1000 + [1e308] * 1000 + [-1.0] * 1000
    reduced = reduce_points(range(3000), values, points=6)
    assert len(reduced.nonfinite) == 1000  # every NaN, none averaged
    kept = dict(zip(reduced.steps, reduced.values, strict=True))
    assert 1e308 in kept.values() and -1.0 in kept.values()
    assert reduced.steps[0] == 0 and reduced.steps[-1] == 2999


def test_report_view_turns_stretches_into_spans_and_gaps() -> None:
    values = [1.0] * 10_000
    for index in range(5000, 6000):
        values[index] = math.nan
    values[7000] = -math.inf
    points = downsample(range(10_000), values, buckets=100)
    kinds = [(s.kind, s.first, s.last, s.count) for s in points.spans]
    assert kinds == [("NaN", 5000, 5999, 1000), ("-Inf", 7000, 7000, 1)]
    gaps = [step for step, value in zip(points.steps, points.values, strict=True) if value != value]
    assert gaps == [5000, 5999, 7000] and len(points.steps) < 300
