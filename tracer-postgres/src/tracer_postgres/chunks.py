"""Chunks: how a metric history lies in `metric_chunks`, and what each chunk row says of its
points.

A series is stored as chunks of at most `CHUNK_POINTS` consecutive points (one flush gives
one or a few), which never overlap in steps. A chunk row holds its points packed: `vals` the
float64 values big-endian (`float8send`'s order, so SQL can build the same bytes), `steps` the
int64 steps the same way, or nothing when the steps are evenly spaced from `first_step` to
`last_step` (the usual case, half the bytes). Beside them, a summary that readers use instead
of the points: the count, the last value, the lowest and highest non-NaN value (what
`list_metrics` reports), the lowest and highest finite value with the offset and step of the
first point holding each, and how many points are NaN or +-Inf. A chart's reduction
(`tracer_postgres.reduction`) takes a chunk that lies inside one bucket from its summary alone.

`CHUNK_POINTS` of 256 keeps a row (at most 4 KiB of points) inline: the table is created with
`toast_tuple_target` at its maximum, so PostgreSQL never tries to compress or move out of line
bytes that do not compress.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

CHUNK_POINTS = 256
_LITTLE_ENDIAN = sys.byteorder == "little"

# The columns of `metric_chunks` in the order `Chunk.row` gives them.
COLUMNS = (
    "series_id, first_step, last_step, count, steps, vals, last_value, lowest, highest,"
    " low, low_at, low_step, high, high_at, high_step, nonfinite"
)
COLUMN_TYPES = (
    "int4", "int8", "int8", "int4", "bytea", "bytea", "float8", "float8", "float8",
    "float8", "int4", "int8", "float8", "int4", "int8", "int4",
)  # fmt: skip


@dataclass(frozen=True)
class Chunk:
    """One row of `metric_chunks` (see the module docstring)."""

    first_step: int
    last_step: int
    count: int
    steps: bytes
    vals: bytes
    last_value: float
    lowest: Optional[float]
    highest: Optional[float]
    low: Optional[float]
    low_at: Optional[int]
    high: Optional[float]
    high_at: Optional[int]
    low_step: Optional[int]
    high_step: Optional[int]
    nonfinite: int

    def row(self, series_id: int) -> tuple[Any, ...]:
        return (
            series_id, self.first_step, self.last_step, self.count, self.steps, self.vals,
            self.last_value, self.lowest, self.highest, self.low, self.low_at, self.low_step,
            self.high, self.high_at, self.high_step, self.nonfinite,
        )  # fmt: skip


def pack(code: str, numbers: Sequence[Any]) -> bytes:
    packed = array(code, numbers)
    if _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def unpack(code: str, blob: bytes) -> array[Any]:
    packed = array(code)
    packed.frombytes(blob)
    if _LITTLE_ENDIAN:
        packed.byteswap()
    return packed


def evenly_spaced(steps: Sequence[int]) -> bool:
    """Whether the steps (ascending) are `range(first, last + 1, stride)`."""
    if len(steps) < 3:
        return True
    stride = steps[1] - steps[0]
    return list(steps) == list(range(steps[0], steps[-1] + 1, stride))


def decode_steps(first: int, last: int, count: int, blob: bytes) -> Sequence[int]:
    """A chunk's steps: a `range` when stored as evenly spaced, else an int64 array."""
    if blob:
        return unpack("q", blob)
    if count == 1:
        return range(first, first + 1)
    return range(first, last + 1, (last - first) // (count - 1))


def make_chunk(steps: Sequence[int], values: Sequence[float]) -> Chunk:
    """The row of one chunk of points (`steps` ascending and unique, at most `CHUNK_POINTS`)."""
    values = array("d", values)  # ints become floats, as stored
    total = sum(values)
    nonfinite = 0
    low: Optional[float]
    high: Optional[float]
    lowest: Optional[float]
    highest: Optional[float]
    low_at: Optional[int]
    high_at: Optional[int]
    if total - total == 0.0:  # every value finite (the usual chunk): C-level passes only
        low = lowest = min(values)
        high = highest = max(values)
        low_at, high_at = values.index(low), values.index(high)
    else:
        finite = [v for v in values if v - v == 0.0]
        nonfinite = len(values) - len(finite)
        low_at = high_at = None
        low = high = None
        if finite:
            low, high = min(finite), max(finite)
            low_at = next(i for i, v in enumerate(values) if v == low)
            high_at = next(i for i, v in enumerate(values) if v == high)
        ordered = [v for v in values if v == v]  # non-NaN: +-Inf counts here
        lowest = min(ordered) if ordered else None
        highest = max(ordered) if ordered else None
    first, last = int(steps[0]), int(steps[-1])
    return Chunk(
        first_step=first,
        last_step=last,
        count=len(values),
        steps=b"" if evenly_spaced(steps) else pack("q", steps),
        vals=pack("d", values),
        last_value=float(values[-1]),
        lowest=lowest,
        highest=highest,
        low=low,
        low_at=low_at,
        high=high,
        high_at=high_at,
        low_step=None if low_at is None else int(steps[low_at]),
        high_step=None if high_at is None else int(steps[high_at]),
        nonfinite=nonfinite,
    )


def make_chunks(steps: Sequence[int], values: Sequence[float]) -> list[Chunk]:
    """Points (ascending, unique steps) cut into chunks of at most `CHUNK_POINTS`."""
    return [
        make_chunk(steps[i : i + CHUNK_POINTS], values[i : i + CHUNK_POINTS])
        for i in range(0, len(steps), CHUNK_POINTS)
    ]
