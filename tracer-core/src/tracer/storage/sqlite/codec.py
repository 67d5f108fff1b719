"""Packing of metric points into chunk rows: 8 bytes a value, steps often free.

Each flush stores one chunk per metric: the values as little-endian float64 (NaN and +-Inf
are kept bit for bit, which a REAL column would not do: SQLite turns NaN into NULL), and the
steps either as NULL, when they form an arithmetic progression from first to last step (the
usual case: a metric logged every step or every k steps), or as little-endian int64.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Sequence
from typing import Optional

_SWAP = sys.byteorder != "little"


def _to_bytes(data: array) -> bytes:  # type: ignore[type-arg]
    if _SWAP:
        data = array(data.typecode, data)
        data.byteswap()
    return data.tobytes()


def _from_bytes(typecode: str, blob: bytes) -> array:  # type: ignore[type-arg]
    data = array(typecode)
    data.frombytes(blob)
    if _SWAP:
        data.byteswap()
    return data


def ascending(steps: Sequence[int]) -> bool:
    """Whether `steps` strictly ascend (the usual case), at C speed."""
    return all(map(operator.lt, steps, steps[1:]))


def normalize(
    steps: Sequence[int], values: Sequence[float], in_order: Optional[bool] = None
) -> tuple[list[int], list[float]]:
    """Sort by step; of repeated steps keep the value written last. `in_order` is
    `ascending(steps)` when the caller knows it already (series sharing one steps list)."""
    steps = steps if type(steps) is list else list(steps)
    values = values if type(values) is list else list(values)
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    if in_order if in_order is not None else ascending(steps):
        return steps, values
    latest = dict(zip(steps, values, strict=False))
    ordered = sorted(latest)
    return ordered, [latest[s] for s in ordered]


def encode(steps: list[int], values: list[float]) -> tuple[int, int, int, Optional[bytes], bytes]:
    """(first_step, last_step, count, steps_blob_or_None, values_blob).

    `steps` must be strictly ascending (as `normalize` leaves them): then `last - first ==
    count - 1` already proves they are contiguous, the common case, with no per-step check.
    """
    count = len(steps)
    first, last = steps[0], steps[-1]
    steps_blob: Optional[bytes] = None
    if count > 2 and last - first != count - 1:
        stride, remainder = divmod(last - first, count - 1)
        if remainder or stride <= 0 or steps != list(range(first, last + 1, stride)):
            steps_blob = _to_bytes(array("q", steps))
    return first, last, count, steps_blob, _to_bytes(array("d", values))


def decode_steps(first: int, last: int, count: int, steps_blob: Optional[bytes]) -> Sequence[int]:
    if steps_blob is not None:
        return _from_bytes("q", steps_blob)
    if count == 1:
        return range(first, first + 1)
    return range(first, last + 1, (last - first) // (count - 1))


def decode_values(values_blob: bytes) -> array:  # type: ignore[type-arg]
    return _from_bytes("d", values_blob)
