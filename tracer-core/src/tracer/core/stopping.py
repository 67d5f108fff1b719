"""Stopping training: `halt_on`, a streak of skipped steps, and what the stop names.

`TrainingTracer` derives from `Stopping`; the decisions live here, apart from the per-step
path. Three sources stop a run, all read by `tracer.step()` and polled by adapters through
`should_stop`: an anomaly of a `halt_on` type (found on the writer thread, after the
anomaly's hooks and the pin of the last healthy checkpoint, so the stop can name it), the
step all ranks agreed to stop at (`core/halting.py`), and `stop_training` (a decision every
rank took alike, as a streak of skipped non-finite steps).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from tracer.core.adapter_calls import ACTIVE
from tracer.exceptions import TrainingHalted
from tracer.records import AnomalyWrite

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.core.halting import HaltAgreement
    from tracer.core.model_saves import ModelSaves

logger = logging.getLogger(__name__)


class Stopping:
    """When and why a run stops training; the attributes are `TrainingTracer`'s."""

    config: TracerConfig
    _state: str
    _step: int
    _halt: Optional[AnomalyWrite]  # the halt_on anomaly, set on the writer thread
    _stop_reason: Optional[dict[str, object]]
    _halt_checkpoint: Optional[str]  # where to restart, named by the halt
    _agreement: Optional[HaltAgreement]
    _saves: Optional[ModelSaves]

    def finish(
        self,
        status: str = "finished",
        error: Optional[str] = None,
        *,
        total_steps: Optional[int] = None,
    ) -> None:
        raise NotImplementedError

    @property
    def should_stop(self) -> bool:
        """True once an anomaly of a `halt_on` type was found (adapters poll this); in a
        distributed job, from the step all ranks agreed to stop at. Also True at once after
        `stop_training` (a decision all ranks took alike: too many skipped steps)."""
        if self._stop_reason is not None:
            return True
        if self._agreement is not None:
            return self._agreement.stops_at(self._step)
        return self._halt is not None

    def stop_training(self, reason: dict[str, object]) -> None:
        """Stop training after the current step (see `RunHandle.stop_training`); the first
        reason given is kept."""
        if self._stop_reason is None:
            self._stop_reason = dict(reason)
            logger.warning("Tracer stops training: %s", reason.get("message"))

    @property
    def stop_message(self) -> Optional[str]:
        """The error a run stopped by `stop_training` ends with; None for any other run."""
        if self._stop_reason is None:
            return None
        return str(TrainingHalted(self._stop_reason))

    @property
    def halt_reason(self) -> Optional[str]:
        """Why `halt_on` stops this run, for the stored error: the anomaly, and the last
        healthy checkpoint to restart from when one is known (None before a halt, and on a
        follower rank)."""
        if self._halt is None:
            return None
        return str(TrainingHalted(dict(self._halt), self._halt_checkpoint))

    def _halt_now(self) -> None:
        anomaly: dict[str, object] = {}
        if self._stop_reason is not None:
            anomaly = dict(self._stop_reason)
        elif self._halt is not None:
            anomaly = dict(self._halt)
        if not anomaly:  # a follower: rank 0 found it
            anomaly = {
                "anomaly_type": "halt_on",
                "step": self._step,
                "message": "rank 0 found an anomaly of a halt_on type; every rank stops here",
            }
        halted = TrainingHalted(anomaly, self._halt_checkpoint)
        self.finish("failed", error=str(halted))
        raise halted

    def _halt_if_asked(self, anomaly: AnomalyWrite) -> None:
        """Writer thread, once the anomaly's hooks ran and the last healthy checkpoint was
        pinned (so the halt names it): set the halt flag for a `halt_on` type (not for an
        episode reported as the run ends: nothing is left to halt)."""
        if (
            self._halt is None
            and self._state is ACTIVE
            and anomaly["anomaly_type"] in self.config.halt_on
        ):
            logger.warning("Tracer halts training: %s", anomaly["message"])
            if self._saves is not None:
                self._halt_checkpoint = self._saves.restart_point(anomaly["step"])
            self._halt = anomaly
