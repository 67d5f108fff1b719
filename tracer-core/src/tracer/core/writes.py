"""What the run hands its writer, and the `Writer` protocol the run talks to.

Two writers exist: `RunWriter` (`tracer.core.writer`), which stores the run, and
`DiscardingWriter`, the writer of a follower rank in a distributed job (rank 0 writes the
run). The run holds either through `Writer`, and so does `record_end`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Protocol, Union

from tracer.records import Collected


class CheckpointRequest(NamedTuple):
    """Take a checkpoint at `step` once everything queued before it is processed.

    `sections` come from the collectors: values, or functions the writer thread calls.
    """

    step: int
    timestamp: float
    reason: str
    sections: dict[str, Any]


class Background(NamedTuple):
    """Collector output for the writer: `Collected`, or a function returning it."""

    source: Union[Collected, Callable[[], Collected]]


class WriteReport(NamedTuple):
    """What became of a run's data: points (one value of one series at one step) written to
    storage, still unwritten when the writer stopped (lost), and dropped to bound memory
    while storage failed; whole steps dropped because the queue was full; failed writes and
    the first error; how often, and how long in all, training waited for the writer to catch
    up (see `tracer.core.writer`). Final once the run has finished."""

    points_written: int
    points_unwritten: int
    points_dropped: int
    steps_dropped: int
    failed_writes: int
    first_error: Optional[str]
    catch_up_waits: int = 0
    catch_up_seconds: float = 0.0

    @property
    def lost(self) -> bool:
        return bool(self.points_unwritten or self.points_dropped or self.steps_dropped)


class Writer(Protocol):
    """The writer as the run sees it."""

    def submit_step(self, step: int, timestamp: float, metrics: dict[str, Any]) -> dict[str, Any]:
        """Queue a closed step's metrics (the dict is the writer's from now on); returns an
        empty dict for the next step's."""

    def submit(self, item: CheckpointRequest | Background) -> None:
        """Queue a checkpoint or collector data, in order with the steps."""

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far is written (or failed and kept)."""

    def close(self, timeout: float) -> bool:
        """Write what is queued and stop; False if that did not finish in time."""

    def report(self) -> WriteReport:
        """What became of the data so far."""

    @property
    def detected_through(self) -> int:
        """The last step detection has seen, with its new anomalies acted on."""

    def summary(self) -> Optional[str]:
        """What went wrong in the background, for the finish report; None if nothing."""


class DiscardingWriter:
    """The writer of a follower rank (see `TrainingTracer`): rank 0 writes the run."""

    def submit_step(self, step: int, timestamp: float, metrics: dict[str, Any]) -> dict[str, Any]:
        metrics.clear()
        return metrics

    def submit(self, item: CheckpointRequest | Background) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> bool:
        return True

    def close(self, timeout: float) -> bool:
        return True

    def summary(self) -> Optional[str]:
        return None

    def report(self) -> WriteReport:
        return WriteReport(0, 0, 0, 0, 0, None)

    @property
    def detected_through(self) -> int:
        return -1  # a follower detects nothing
