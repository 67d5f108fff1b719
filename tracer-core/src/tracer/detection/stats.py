"""Robust running statistics for detectors, cheap enough to update at every step.

All of them depend only on the sequence of values pushed, never on how the pushes are
batched, so online and offline detection agree exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of normal noise


def median_of_sorted(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0


class RobustBaseline:
    """Median and MAD of the last `window` finite values, refreshed every `refresh` pushes.

    Refreshing in blocks keeps the cost low while the baseline still follows the run, and
    lets detectors test a whole block against one median at C speed (`until_change`,
    `extend`); `ready` once `min_count` values were seen. Non-finite values are not pushed
    (they are a separate anomaly).

    A refresh sorts the window (about 1 us for 64 values); the MAD costs about four times
    that, and most blocks of a healthy run never need it: `sigma_floor()`, read off the sorted
    window in O(1), is a lower bound of `sigma()` that is enough to tell that a block lies
    well inside a limit. The MAD is computed on first use after a refresh.
    """

    __slots__ = ("_count", "_mad", "_ordered", "_values", "median", "min_count", "refresh")

    def __init__(self, window: int = 64, refresh: int = 32, min_count: int = 32) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._count = 0
        self.refresh = refresh
        self.min_count = min_count
        self.median = math.nan
        self._mad = math.nan
        self._ordered: list[float] = []  # the window at the last refresh, sorted

    @property
    def ready(self) -> bool:
        return self.median == self.median  # not NaN

    @property
    def mad(self) -> float:
        """Median absolute deviation of the window at the last refresh (NaN before one)."""
        mad = self._mad
        if mad != mad and self._ordered:
            median = self.median
            deviations = map(abs, map(median.__rsub__, self._ordered))  # |v - median|
            mad = self._mad = median_of_sorted(sorted(deviations))
        return mad

    def push(self, value: float) -> None:
        self._values.append(value)
        self._count += 1
        self._maybe_refresh()

    def until_change(self) -> int:
        """How many pushes keep the current median and MAD (the next one may change them)."""
        if self._count < self.min_count:
            return self.min_count - self._count
        if not self.ready:
            return 1
        return self.refresh - self._count % self.refresh

    def extend(self, values: Sequence[float]) -> None:
        """Push several finite values at C speed; at most `until_change()` of them, so the
        refreshes happen at exactly the counts they would with one push at a time."""
        self._values.extend(values)
        self._count += len(values)
        self._maybe_refresh()

    def _maybe_refresh(self) -> None:
        if self._count >= self.min_count and (self._count % self.refresh == 0 or not self.ready):
            ordered = self._ordered = sorted(self._values)
            self.median = median_of_sorted(ordered)
            self._mad = math.nan  # computed when first asked for

    def sigma(self) -> float:
        """Robust noise scale, floored so a perfectly flat series does not divide by 0."""
        return max(MAD_TO_SIGMA * self.mad, 1e-3 * abs(self.median), 1e-12)

    def sigma_floor(self) -> float:
        """A lower bound of `sigma()` that needs no MAD (NaN before the first refresh).

        Of n sorted values, those strictly within d of the median, for d the smaller of the
        median's distances to the values k/2 below and k/2 above the middle (k = the rank of
        the lower middle deviation), are at most k - 1; so the k-th smallest deviation, and
        the MAD with it, is at least d. For roughly symmetric noise d is close to the MAD.
        """
        ordered = self._ordered
        n = len(ordered)
        if n == 0:
            return math.nan
        k = (n + 1) // 2  # the MAD is at least the k-th smallest deviation
        low = (n - 1) // 2 - k // 2  # a window of k + 1 values around the middle...
        high = low + k  # ...whose ends, low and high, lie at distance >= d
        if self._mad == self._mad or high >= n:  # known already, or too few values
            return self.sigma()
        median = self.median
        bound = min(median - ordered[low], ordered[high] - median) * (1.0 - 1e-12)
        return max(MAD_TO_SIGMA * max(bound, 0.0), 1e-3 * abs(median), 1e-12)


def segments(baseline: RobustBaseline, count: int) -> Iterator[tuple[int, int]]:
    """Split `count` values into (start, end) ranges over which `baseline` stays the same,
    assuming every value is pushed (pushing fewer only moves the next change later)."""
    start = 0
    while start < count:
        end = min(count, start + baseline.until_change())
        yield start, end
        start = end


# Fast paths test "certainly inside the limit" with this margin, and leave anything closer to
# the exact value-by-value test, so both paths always agree.
SAFETY = 1.0 - 1e-9


class BlockMedians:
    """Medians of consecutive, non-overlapping blocks of `size` finite values.

    Each block's noise (the standard error of its median, from its MAD) is computed only when
    asked for (`noise_at`), right after the `feed` that completed the block: a loss that
    does not improve never needs it.
    """

    __slots__ = ("_block", "_noise", "_ordered", "medians", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._block: list[float] = []
        self.medians: list[float] = []
        self._noise: dict[int, float] = {}  # of blocks of the last feed, once asked for
        self._ordered: dict[int, list[float]] = {}  # blocks of the last feed, sorted

    def feed(self, steps: Sequence[int], values: Sequence[float]) -> list[int]:
        """Add values (non-finite ones are left out); returns, for each block they completed
        (its median appended to `medians`), the step of the value that completed it."""
        if not all_finite(values):
            kept = [(s, v) for s, v in zip(steps, values, strict=True) if v - v == 0.0]
            steps, values = [s for s, _ in kept], [v for _, v in kept]
        self._ordered.clear()
        self._noise.clear()
        completed: list[int] = []
        size, medians, sorted_blocks = self.size, self.medians, self._ordered
        count = len(values)
        start = 0
        if self._block:  # first complete the block the last feed left open
            start = min(count, size - len(self._block))
            self._block.extend(values[:start])
            if len(self._block) < size:
                return completed
            ordered = sorted_blocks[len(medians)] = sorted(self._block)
            medians.append(median_of_sorted(ordered))
            completed.append(steps[start - 1])
            self._block = []
        while start + size <= count:  # whole blocks, straight from the slice
            end = start + size
            ordered = sorted_blocks[len(medians)] = sorted(values[start:end])
            medians.append(median_of_sorted(ordered))
            completed.append(steps[end - 1])
            start = end
        if start < count:
            self._block = list(values[start:])
        return completed

    def noise_at(self, index: int) -> float:
        """The standard error of block `index`'s median (robust); `index` is one the last
        `feed` completed."""
        noise = self._noise.get(index)
        if noise is None:
            ordered = self._ordered[index]
            median = self.medians[index]
            mad = median_of_sorted(sorted(map(abs, map(median.__rsub__, ordered))))
            # SE of a median ~ 1.25 sigma / sqrt(n); sigma ~ 1.4826 MAD
            noise = self._noise[index] = 1.25 * MAD_TO_SIGMA * mad / math.sqrt(self.size)
        return noise


def all_finite(values: Sequence[float]) -> bool:
    """True when no value is NaN or +-Inf, tested at C speed (a sum that overflows to Inf
    falls back to a value-by-value check)."""
    total = sum(values)
    if total - total == 0.0:
        return True
    return all(v - v == 0.0 for v in values)
