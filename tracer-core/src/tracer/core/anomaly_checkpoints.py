"""When an anomaly checkpoint is taken: the small state machine the writer runs per batch.

It also says which episodes the `tracer_anomaly` hook announces: new ones, and those whose
severity rose. A new episode asks for a checkpoint at its first step, once per step however
many episodes open there. The checkpoint cannot always be taken at once: a collector may
still hold that step's data on its way (gradient norms sit in a device ring until the
collector is asked to send them, which it does at the next step). So each step waits while a
collector says its data is pending, until training has moved `wait_steps` steps on, at most
`wait_seconds`, and never past the run's end. The metric values logged at that step are kept
from the batch that opened it, since a later batch no longer holds them.

States per step: unseen -> waiting -> taken. `open()` moves steps to waiting, `ready()` moves
them to taken; a taken step never waits again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from tracer.core.columns import Points
from tracer.detection.runner import episode_key
from tracer.records import AnomalyWrite, severity_rank

WAIT_STEPS = 2  # a collector asked for a step's data sends it at the next step
WAIT_SECONDS = 5.0  # past this (storage far too slow, training stalled) take it as it is


class _Waiting(NamedTuple):
    until_progress: int
    until_time: float
    metrics: dict[str, float]  # the values logged at the step, from the batch that opened it


class AnomalyCheckpoints:
    """The anomaly checkpoints of one run: which episodes are new, which steps wait, which
    are ready. Used by the writer thread only."""

    def __init__(
        self,
        progress: Callable[[], int],
        data_pending: Callable[[int], bool],
        *,
        wait_steps: int = WAIT_STEPS,
        wait_seconds: float = WAIT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._progress = progress
        self._data_pending = data_pending
        self._wait_steps = wait_steps
        self._wait_seconds = wait_seconds
        self._clock = clock
        self._announced: dict[tuple[str, int, str], int] = {}  # episode -> severity rank
        self._taken_or_waiting: set[int] = set()
        self._waiting: dict[int, _Waiting] = {}

    @property
    def waiting(self) -> bool:
        """Whether some step still waits for its checkpoint (the writer flushes until not)."""
        return bool(self._waiting)

    def open(
        self, found: Iterable[AnomalyWrite], points: Points, *, checkpoints: bool = True
    ) -> list[AnomalyWrite]:
        """Note the episodes detection reported for a batch (new ones and updates); return
        those to announce (the `tracer_anomaly` hook): the new ones, and those whose severity
        rose since they were last announced (a divergence turning critical matters to
        `webhook_min_severity="critical"` and `pin_on`). Each new episode's first step starts
        waiting for its checkpoint, with its values from `points`, unless `checkpoints` is
        False (episodes reported as the run ends: no state of their step is left to take)."""
        new: list[AnomalyWrite] = []
        announce: list[AnomalyWrite] = []
        for anomaly in found:
            key = episode_key(anomaly)
            rank = severity_rank(anomaly["severity"])
            announced = self._announced.get(key)
            if announced is None:
                new.append(anomaly)
            elif rank <= announced:
                continue
            self._announced[key] = rank
            announce.append(anomaly)
        if not checkpoints:
            return announce
        for step in sorted({anomaly["step"] for anomaly in new}):
            if step in self._taken_or_waiting:
                continue
            self._taken_or_waiting.add(step)
            self._waiting[step] = _Waiting(
                self._progress() + self._wait_steps,
                self._clock() + self._wait_seconds,
                _values_at(points, step),
            )
        return announce

    def ready(self, *, stopping: bool) -> list[tuple[int, dict[str, float]]]:
        """The steps whose checkpoint should be taken now, oldest first, with the metric values
        logged at each; they leave the waiting state."""
        ready: list[tuple[int, dict[str, float]]] = []
        for step, waiting in sorted(self._waiting.items()):
            if (
                not stopping
                and self._progress() <= waiting.until_progress
                and self._clock() < waiting.until_time
                and self._data_pending(step)
            ):
                continue
            del self._waiting[step]
            ready.append((step, waiting.metrics))
        return ready


def _values_at(points: Points, step: int) -> dict[str, float]:
    """The user's metric values at `step` in this batch (internal `_` series left out)."""
    values_at: dict[str, float] = {}
    for name, (steps, values) in points.items():
        if steps and steps[0] <= step <= steps[-1] and not name.startswith("_"):
            try:
                values_at[name] = values[steps.index(step)]
            except ValueError:
                continue
    return values_at
