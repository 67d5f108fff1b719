"""The batches the writer has built and storage has not accepted yet, bounded in bytes.

Batches wait here, oldest first, until a write lands. Normally that is one flush; while
storage fails they pile up, so a failed batch is packed into typed arrays (16 bytes a point)
and, past the bound, the oldest batch is dropped (the newest data is kept) and its points
counted. Nothing here touches storage: the writer writes `first()` and calls `written()`.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from tracer.core.columns import Points, pack, points_bytes
from tracer.records import AnomalyWrite, CheckpointWrite, EventWrite, SampleWrite


class Batch(NamedTuple):
    """One flush's worth of data, written in one storage transaction."""

    points: Points
    checkpoints: list[CheckpointWrite]
    events: list[EventWrite]
    samples: list[SampleWrite]
    anomalies: list[AnomalyWrite]  # episode states to store (new ones and updates)
    opened: list[AnomalyWrite]  # those to announce (new, or risen in severity): the hook's
    progress: int  # the run's step count when the batch was taken: never ahead of its data

    def size(self) -> int:
        return sum(len(steps) for steps, _ in self.points.values())

    def bytes(self) -> int:
        return points_bytes(self.points)

    def empty(self) -> bool:
        return not (
            self.points or self.checkpoints or self.events or self.samples or self.anomalies
        )


class Backlog:
    """Batches waiting for storage, within `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._batches: deque[Batch] = deque()
        self.bytes = 0
        self.dropped_points = 0  # points of batches dropped to keep within the bound

    def __bool__(self) -> bool:
        return bool(self._batches)

    def points(self) -> int:
        """Points waiting (never written if the run ends now)."""
        return sum(batch.size() for batch in self._batches)

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.bytes += batch.bytes()
        self._bound()

    def first(self) -> Batch:
        return self._batches[0]

    def written(self) -> Batch:
        """The first batch was written: it leaves."""
        batch = self._batches.popleft()
        self.bytes -= batch.bytes()
        return batch

    def failed(self) -> None:
        """A write failed: the batches wait, so they take 16 bytes a point, not lists."""
        for batch in self._batches:
            before = batch.bytes()
            pack(batch.points)
            self.bytes += batch.bytes() - before
        self._bound()

    def _bound(self) -> None:
        while self.bytes > self.max_bytes and len(self._batches) > 1:
            dropped = self._batches.popleft()
            self.bytes -= dropped.bytes()
            self.dropped_points += dropped.size()
