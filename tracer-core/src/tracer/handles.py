"""What the layers below the run may rely on from it: the `RunHandle` protocol.

Collectors (built-in and third-party) and plugin hooks receive the run; they see it through
this narrow, typed view, so `capture/` and `plugins/` never import the run's class (which
sits above them) and the run can change inside without breaking them. `TrainingTracer`
satisfies it; mypy checks that where the run hands itself down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.records import Collected


class RunHandle(Protocol):
    """The run, as a collector or a plugin hook sees it."""

    @property
    def run_id(self) -> str:
        """The stored run's id ("" on a follower rank, which stores nothing)."""

    @property
    def run_name(self) -> str: ...

    @property
    def config(self) -> TracerConfig:
        """The run's settings (read only)."""

    @property
    def current_step(self) -> int:
        """The step that `log()` writes to now."""

    @property
    def checkpoint_due(self) -> bool:
        """True when closing the current step will take an interval checkpoint."""

    @property
    def active(self) -> bool:
        """Whether hooks should act: the run is going on in this process (not ended, not a
        forked child's inherited copy)."""

    def submit_background(self, source: Union[Collected, Callable[[], Collected]]) -> None:
        """Hand data (or a function producing it, called on the writer thread) to the run's
        writer."""

    def stop_training(self, reason: dict[str, object]) -> None:
        """Stop training after the current step, on this rank: `should_stop` turns True and
        `tracer.step()` raises `TrainingHalted(reason)` (keys "anomaly_type", "step",
        "message"), the run ending "failed". Only for a decision every rank takes alike
        (from a value reduced across the process group), since no rank waits for another."""
