"""The run's model saves as the run acts on them: the restart point a `halt_on` stop names,
and, with `pin_checkpoints=True`, the pins (`tracer.actions.pinning`).

Saves arrive on the training thread (`record_model_save`); anomalies on the writer thread, in
`TrainingTracer._anomalies_found`, which pins before it sets the halt flag: so when
`tracer.step()` raises `TrainingHalted`, the pinned path is already known and goes into its
message and the run's stored error.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Optional

from tracer.actions.pinning import CheckpointPins
from tracer.actions.pins import remove_run_pins
from tracer.config import TracerConfig
from tracer.records import AnomalyWrite, EventWrite, severity_rank
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

REMEMBERED_SAVES = 64  # recent saves kept in memory for the restart point of a halt
PIN_WAIT_S = 600.0  # at finish, how long a pinned checkpoint's copy may still take


class ModelSaves:
    """Recent saves of one run on its writing process, and its pins when pinning is on."""

    def __init__(
        self,
        config: TracerConfig,
        storage: StorageBackend,
        run_id: str,
        submit_event: Callable[[EventWrite], None],
        detected_through: Callable[[], int],
    ) -> None:
        self._recent: deque[tuple[str, int]] = deque(maxlen=REMEMBERED_SAVES)
        self._pin_from = severity_rank(config.pin_on)
        self._pinned: dict[int, str] = {}  # anomaly onset step -> the pinned path
        self.pins: Optional[CheckpointPins] = None
        if config.pin_checkpoints:
            directory = storage.local_directory()
            if directory is None:
                logger.warning(
                    "Tracer cannot pin checkpoints: storage %s is not a local directory"
                    " (pin_checkpoints needs one, to hard-link checkpoints into).",
                    config.storage_path,
                )
            else:
                self.pins = CheckpointPins(directory, run_id, submit_event, detected_through)

    def recorded(self, path: str, step: int) -> None:
        """Training thread: a model checkpoint was saved at `path` (staged for pinning)."""
        self._recent.append((path, step))
        if self.pins is not None:
            try:
                self.pins.stage(path, step)
            except Exception:  # pinning must never break training
                logger.exception("Tracer could not stage %s for pinning.", path)

    def anomaly_opened(self, anomaly: AnomalyWrite) -> None:
        """Writer thread: pin the last save before the onset of an anomaly at or above
        `pin_on` (once per onset step; an episode that opened below it and rose is announced
        again, and pinned then)."""
        if self.pins is None or anomaly["step"] in self._pinned:
            return
        if severity_rank(anomaly["severity"]) < self._pin_from:
            return
        try:
            pinned = self.pins.pin(anomaly["step"], dict(anomaly))
        except Exception:
            logger.exception("Tracer could not pin the last healthy checkpoint.")
            return
        if pinned is not None:
            self._pinned[anomaly["step"]] = pinned

    def restart_point(self, onset_step: int) -> Optional[str]:
        """Where to restart after an anomaly that started at `onset_step`: the pinned
        checkpoint, else the last save recorded before it (its own path), else None."""
        pinned = self._pinned.get(onset_step)
        if pinned is not None:
            return pinned
        before = [(step, path) for path, step in self._recent if step < onset_step]
        return max(before, key=lambda saved: saved[0])[1] if before else None

    def close(self) -> None:
        """The run ends: let pin copies finish, release the staged links."""
        if self.pins is not None:
            self.pins.close(PIN_WAIT_S)


def remove_pins_of(storage: StorageBackend, run_ids: Sequence[str]) -> None:
    """Deleted runs (retention) lose their pins too; each one removed is logged."""
    directory = storage.local_directory()
    if directory is None:
        return
    for run_id in run_ids:
        try:
            removed = remove_run_pins(directory, run_id)
        except OSError as error:
            logger.warning("Tracer could not remove the pins of deleted run %s: %s", run_id, error)
            continue
        for pin in removed:
            logger.warning("Retention: removed pinned checkpoint %s of run %s.", pin.path, run_id)
