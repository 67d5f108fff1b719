"""Exceptions Tracer raises at the call site. Background failures are logged, never raised."""

from __future__ import annotations

from typing import Optional


class TracerError(Exception):
    """Base class of Tracer's own errors."""


class StorageError(TracerError):
    """The storage cannot be opened or used: a bad path, a corrupt or foreign database file."""


class StoreNotFoundError(StorageError):
    """A reader opened a location read-only where nothing has been recorded yet."""


class RunNotFoundError(TracerError, LookupError):
    """A run id or name that matches no stored run; the message lists near matches."""


class DuplicateRunError(StorageError):
    """`create_run` with an id, or a (project, name), that is already stored."""


class TrainingHalted(TracerError):
    """Raised by `tracer.step()` after an anomaly whose type is in `halt_on` was found.

    The run is already finished (status "failed", the anomaly in its error) when this is
    raised; `anomaly` is the stored anomaly dict. Catch it to end training cleanly:

        try:
            for batch in loader:
                ...
                tracer.step()
        except tracer.TrainingHalted as halted:
            print("stopped:", halted.anomaly["message"])

    `checkpoint` is where to restart from: the last healthy model checkpoint (pinned with
    `pin_checkpoints=True`, else the save's own path), when one was recorded before the
    anomaly; the message names it too, and so does the run's stored error.
    """

    def __init__(self, anomaly: dict[str, object], checkpoint: Optional[str] = None) -> None:
        message = (
            f"training halted on {anomaly['anomaly_type']} at step"
            f" {anomaly['step']}: {anomaly['message']}"
        )
        if checkpoint is not None:
            message += f"; last healthy checkpoint: {checkpoint}"
        super().__init__(message)
        self.anomaly = anomaly
        self.checkpoint = checkpoint
