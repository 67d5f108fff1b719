"""Robust running statistics for detectors, cheap enough to update at every step.

All of them depend only on the sequence of values pushed, never on how the pushes are
batched, so online and offline detection agree exactly.
"""

from __future__ import annotations

import math
from collections import deque

MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of normal noise


def median_of_sorted(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0


class RobustBaseline:
    """Median and MAD of the last `window` finite values, refreshed every `refresh` pushes.

    Refreshing in blocks keeps the cost near 0.5 us a value (two sorts of 64 floats every
    16 values) while the baseline still follows the run; `ready` once `min_count` values
    were seen. Non-finite values are not pushed (they are a separate anomaly).
    """

    __slots__ = ("_count", "_values", "mad", "median", "min_count", "refresh")

    def __init__(self, window: int = 64, refresh: int = 16, min_count: int = 32) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._count = 0
        self.refresh = refresh
        self.min_count = min_count
        self.median = math.nan
        self.mad = math.nan

    @property
    def ready(self) -> bool:
        return self.median == self.median  # not NaN

    def push(self, value: float) -> None:
        self._values.append(value)
        self._count += 1
        if self._count >= self.min_count and (self._count % self.refresh == 0 or not self.ready):
            ordered = sorted(self._values)
            self.median = median_of_sorted(ordered)
            self.mad = median_of_sorted(sorted(abs(v - self.median) for v in ordered))

    def sigma(self) -> float:
        """Robust noise scale, floored so a perfectly flat series does not divide by 0."""
        return max(MAD_TO_SIGMA * self.mad, 1e-3 * abs(self.median), 1e-12)


class BlockMedians:
    """Medians of consecutive, non-overlapping blocks of `size` finite values."""

    __slots__ = ("_block", "medians", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._block: list[float] = []
        self.medians: list[float] = []

    def push(self, value: float) -> bool:
        """Add a value; True when it completed a block (a new median is in `medians`)."""
        self._block.append(value)
        if len(self._block) < self.size:
            return False
        self.medians.append(median_of_sorted(sorted(self._block)))
        self._block = []
        return True
