"""What a detector is fed in `DetectorConformance`, and how the suite cuts it: a stream of
series points, events and checkpoints (`DetectorStream`, built with `make_event` and
`make_checkpoint`), and `split_stream`, which cuts it into the pieces a run's flushes would.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from tracer.records import CheckpointWrite, EventWrite

SeriesPoints = tuple[Sequence[int], Sequence[float]]


@dataclass
class DetectorStream:
    """What a detector is fed: series points, events and checkpoints, each in step order.

    `series` maps a series name to its (steps, values); `events` and `checkpoints` are the
    dicts the run stores (`make_event` / `make_checkpoint` build them).
    """

    series: Mapping[str, SeriesPoints] = field(default_factory=dict)
    events: Sequence[EventWrite] = field(default_factory=list)
    checkpoints: Sequence[CheckpointWrite] = field(default_factory=list)

    def steps(self) -> set[int]:
        """Every step something happens at (a finding must name one of them)."""
        found = {int(s) for steps, _ in self.series.values() for s in steps}
        found.update(int(e["step"]) for e in self.events)
        found.update(int(c["step"]) for c in self.checkpoints)
        return found


def make_event(step: int, kind: str, data: Optional[dict[str, Any]] = None) -> EventWrite:
    """An event as the capture stores it, e.g. `make_event(5, "nonfinite_gradients", {...})`."""
    return {"step": step, "kind": kind, "data": dict(data or {})}


def make_checkpoint(
    step: int,
    gradient_stats: Optional[dict[str, dict[str, float]]] = None,
    metrics: Optional[dict[str, float]] = None,
    system_metrics: Optional[dict[str, float]] = None,
    reason: str = "interval",
) -> CheckpointWrite:
    """A checkpoint as the writer stores it; `gradient_stats` is per layer, e.g.
    `{"fc.weight": {"norm": 0.1, "max_norm_since_checkpoint": 0.3}}`."""
    return {
        "step": step,
        "timestamp": 1_700_000_000.0 + step,
        "reason": reason,
        "metrics": dict(metrics or {}),
        "gradient_stats": {k: dict(v) for k, v in (gradient_stats or {}).items()},
        "system_metrics": dict(system_metrics or {}),
        "extra": {},
    }


Piece = tuple[dict[str, SeriesPoints], list[EventWrite], list[CheckpointWrite]]


def split_stream(stream: DetectorStream, sizes: Union[random.Random, int]) -> list[Piece]:
    """Cut a stream into consecutive step ranges, the way the writer's flushes cut a run.

    `sizes` is a piece size in steps, or a random generator that draws each piece's size.
    Every part of the stream keeps its order; each piece holds everything at its steps.
    """
    steps = sorted(stream.steps())
    bounds: list[int] = []
    index = 0
    while index < len(steps):
        bounds.append(steps[index])
        size = sizes if isinstance(sizes, int) else sizes.choice((1, 1, 2, 3, 5, 8, 13, 40))
        index += max(1, size)
    if steps:
        bounds.append(steps[-1] + 1)
    pieces: list[Piece] = []
    for start, end in itertools.pairwise(bounds):
        points: dict[str, SeriesPoints] = {}
        for name, (series_steps, values) in stream.series.items():
            first = bisect.bisect_left(series_steps, start)
            last = bisect.bisect_left(series_steps, end)
            if last > first:
                points[name] = (list(series_steps[first:last]), list(values[first:last]))
        events = [e for e in stream.events if start <= e["step"] < end]
        checkpoints = [c for c in stream.checkpoints if start <= c["step"] < end]
        pieces.append((points, events, checkpoints))
    return pieces
