"""Exceptions Tracer raises at the call site. Background failures are logged, never raised."""

from __future__ import annotations


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
    """

    def __init__(self, anomaly: dict[str, object]) -> None:
        super().__init__(
            f"training halted on {anomaly['anomaly_type']} at step"
            f" {anomaly['step']}: {anomaly['message']}"
        )
        self.anomaly = anomaly
