"""Reducing a history to drawable size, keeping what matters: per pixel-wide bucket of
steps, the lowest and highest finite value (so spikes survive), and every non-finite
stretch as a `Span` (so a NaN is never averaged away). Used by the report's data and by
the standalone charts of `tracer plot`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

BUCKETS = 600  # points kept per series: about one min/max pair per pixel of a chart


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


def kind_of(value: float) -> str:
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


class _SpanBuilder:
    """Collects consecutive non-finite points into spans, in step order."""

    def __init__(self) -> None:
        self.spans: list[list[Any]] = []  # [kind, first, last, count]
        self.open = False

    def add(self, step: int, value: float) -> None:
        kind = kind_of(value)
        if self.open and self.spans[-1][0] == kind:
            self.spans[-1][2] = step
            self.spans[-1][3] += 1
        else:
            self.spans.append([kind, step, step, 1])
        self.open = True

    def close(self) -> None:
        self.open = False

    def result(self, min_gap: float) -> list[Span]:
        """Spans of one kind closer than `min_gap` steps are merged (about one pixel)."""
        merged: list[list[Any]] = []
        for span in self.spans:
            same = [m for m in merged[-3:] if m[0] == span[0]]
            if same and span[1] - same[-1][2] <= min_gap:
                same[-1][2] = span[2]
                same[-1][3] += span[3]
            else:
                merged.append(list(span))
        return [Span(kind, int(first), int(last), count) for kind, first, last, count in merged]


def downsample(steps: Sequence[int], values: Sequence[float], buckets: int = BUCKETS) -> Points:
    """At most about 2 x `buckets` points of a history, for drawing.

    Buckets are equal ranges of steps. A bucket whose sum is finite (the usual case) holds
    only finite values: its min and max are found by C-level passes; only buckets with NaN or
    Inf are walked point by point.
    """
    count = len(values)
    if count == 0:
        return Points([], [], [], 0)
    first, last = int(steps[0]), int(steps[-1])
    min_gap = (last - first) / max(buckets, 1)
    builder = _SpanBuilder()
    out_steps: list[int] = []
    out_values: list[float] = []
    if count <= 2 * buckets:
        for step, value in zip(steps, values, strict=True):
            out_steps.append(int(step))
            if math.isfinite(value):
                out_values.append(float(value))
                builder.close()
            else:
                out_values.append(math.nan)
                builder.add(int(step), value)
        return Points(out_steps, out_values, builder.result(min_gap), count)
    width = (last - first) / buckets
    bounds = [bisect_left(steps, first + width * k) for k in range(buckets)] + [count]
    for start, end in pairwise(bounds):
        if start >= end:
            continue
        chunk = values[start:end]
        try:
            total = math.fsum(chunk)
        except (OverflowError, ValueError):
            total = math.nan
        if math.isfinite(total):
            low, high = chunk.index(min(chunk)), chunk.index(max(chunk))
            picked = sorted({low, high})
            builder.close()
        else:
            picked = _walk(steps, chunk, start, builder)
        for index in picked:
            out_steps.append(int(steps[start + index]))
            value = chunk[index]
            out_values.append(float(value) if math.isfinite(value) else math.nan)
    return Points(out_steps, out_values, builder.result(min_gap), count)


def _walk(
    steps: Sequence[int], chunk: Sequence[float], start: int, builder: _SpanBuilder
) -> list[int]:
    """Indices to keep of a bucket holding non-finite values: its finite min and max, and
    its first and last non-finite point (gaps in the line); spans go to `builder`."""
    low = high = first_bad = last_bad = -1
    for index, value in enumerate(chunk):
        if math.isfinite(value):
            builder.close()
            if low < 0 or value < chunk[low]:
                low = index
            if high < 0 or value > chunk[high]:
                high = index
        else:
            builder.add(int(steps[start + index]), value)
            first_bad = index if first_bad < 0 else first_bad
            last_bad = index
    return sorted({i for i in (low, high, first_bad, last_bad) if i >= 0})
