"""Collectors: the objects that add data to a run beyond `log()` (gradients, system, samples).

A collector is created per run by a factory registered through the
`tracer_register_collectors` hook. The run calls it itself (never through pluggy on the
per-step path) and guards every call: a collector that raises is reported once and, after
`MAX_FAILURES`, switched off; training never sees the exception.

Data reaches storage through the run's writer: `run.submit_background(fn)` queues `fn`, which
runs later on the writer thread and returns `Collected` rows, events and samples. That is
where device tensors are read back, so the training thread never waits on a device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from tracer.records import Collected  # re-exported: collectors import it from here

if TYPE_CHECKING:
    from tracer.handles import RunHandle

__all__ = ["MAX_FAILURES", "Collected", "Collector", "CollectorFactory", "CollectorSet"]

logger = logging.getLogger(__name__)

MAX_FAILURES = 3


# A checkpoint contribution: section name -> value, or a zero-argument function that the
# writer thread calls to produce it. Sections "gradient_stats", "system_metrics" and
# "samples" have their own place in a checkpoint; any other name is kept under `extra`.
Contribution = Mapping[str, Any]


class Collector:
    """Base class of collectors; override what you need. All methods run on the training thread.

    Set `per_step = True` to have `on_step_end` called at every `tracer.step()`; keep it to a
    few microseconds (queue device work, never read it back).
    """

    name = "collector"
    per_step = False

    def watch(
        self, model: Any, optimizer: Optional[Any] = None, capture_point: Optional[str] = None
    ) -> None:
        """`tracer.watch(model, optimizer)` was called. A `capture_point` name means a
        framework adapter will call `capture_now()` itself at that point (no hooks)."""

    def capture_now(self) -> None:
        """An adapter's capture point was reached (after `watch(..., capture_point=...)`)."""

    def optimizer_step_skipped(self) -> None:
        """An adapter saw the optimizer skip this step (fp16 overflow)."""

    def holds_open_step(self) -> bool:
        """Whether data of the still-open step waits for `on_step_end` (so finish closes it)."""
        return False

    def on_step_end(self, step: int) -> None:
        """Step `step` was closed (only called when `per_step` is True)."""

    def checkpoint(self, step: int, reason: str) -> Contribution:
        """A checkpoint is being taken at `step`; return this collector's sections."""
        return {}

    def anomaly_sections(self, step: int) -> Contribution:
        """An anomaly was found at `step` (a past step): sections for its checkpoint.

        Called on the writer thread; return what is still known about that step.
        """
        return {}

    def anomaly_data_pending(self, step: int) -> bool:
        """Writer thread: True while data of `step` is still on its way (then send it soon);
        the anomaly checkpoint waits a few flushes for it."""
        return False

    def close(self) -> None:
        """The run is finishing: submit what is left, remove hooks, stop threads."""


CollectorFactory = Callable[["RunHandle"], Optional[Collector]]


class CollectorSet:
    """The run's collectors, each call guarded; `per_step` ones kept in a separate list."""

    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors
        self._failures: dict[str, int] = {}
        self.stepping: list[Collector] = [c for c in collectors if c.per_step]

    def __iter__(self) -> Any:
        return iter(self._collectors)

    def _failed(self, collector: Collector, action: str) -> None:
        count = self._failures.get(collector.name, 0) + 1
        self._failures[collector.name] = count
        if count == 1:
            logger.exception(
                "Tracer collector %r failed in %s; training goes on.", collector.name, action
            )
        if count >= MAX_FAILURES and collector in self._collectors:
            logger.warning(
                "Tracer collector %r failed %d times and is switched off.", collector.name, count
            )
            self._collectors.remove(collector)
            if collector in self.stepping:
                self.stepping.remove(collector)
            try:
                collector.close()
            except Exception:
                logger.debug("closing a failed collector failed too", exc_info=True)

    def watch(self, model: Any, optimizer: Optional[Any], capture_point: Optional[str]) -> None:
        for collector in list(self._collectors):
            try:
                if capture_point is None:
                    collector.watch(model, optimizer)
                else:
                    collector.watch(model, optimizer, capture_point=capture_point)
            except Exception:
                self._failed(collector, "watch")
        self.stepping = [c for c in self._collectors if c.per_step]

    def holds_open_step(self) -> bool:
        return any(collector.holds_open_step() for collector in self.stepping)

    def capture_now(self) -> None:
        for collector in list(self._collectors):
            try:
                collector.capture_now()
            except Exception:
                self._failed(collector, "capture_now")

    def optimizer_step_skipped(self) -> None:
        for collector in list(self._collectors):
            try:
                collector.optimizer_step_skipped()
            except Exception:
                self._failed(collector, "optimizer_step_skipped")

    def step_end(self, step: int) -> None:
        for collector in list(self.stepping):  # a failing one may be removed mid-loop
            try:
                collector.on_step_end(step)
            except Exception:
                self._failed(collector, "on_step_end")

    def checkpoint(self, step: int, reason: str) -> dict[str, Any]:
        sections: dict[str, Any] = {}
        for collector in list(self._collectors):
            try:
                sections.update(collector.checkpoint(step, reason))
            except Exception:
                self._failed(collector, "checkpoint")
        return sections

    def anomaly_sections(self, step: int) -> dict[str, Any]:
        """Writer thread: each collector's sections for an anomaly checkpoint at `step`."""
        sections: dict[str, Any] = {}
        for collector in list(self._collectors):
            try:
                sections.update(collector.anomaly_sections(step))
            except Exception:
                logger.debug("collector %r has no anomaly sections", collector.name, exc_info=True)
        return sections

    def anomaly_data_pending(self, step: int) -> bool:
        pending = False
        for collector in list(self._collectors):
            try:
                pending = collector.anomaly_data_pending(step) or pending
            except Exception:
                logger.debug(
                    "collector %r failed in anomaly_data_pending", collector.name, exc_info=True
                )
        return pending

    def close(self) -> None:
        for collector in list(self._collectors):
            try:
                collector.close()
            except Exception:
                logger.exception("Tracer collector %r failed to close.", collector.name)
        self.stepping = []
