"""The detector interface: the same object judges a run while it trains and afterwards.

A detector sees three streams, each in step order, and never relies on how they are cut into
pieces or interleaved with each other: that is what makes the online result (fed by the
writer thread, one flush at a time) identical to the offline one (`AnomalyDetector` replays
whole series from storage):
- series points: `observe(series, steps, values)` for each series it `wants`;
- events: `observe_event(event)` ("nonfinite_gradients", "gradient_capture", ...);
- checkpoints: `observe_checkpoint(checkpoint)` (per-layer gradient statistics).
Each call returns findings. A finding is an episode: `step` is where it started, `end_step`
the last step it was seen at, `count` how many observations it spans, `open` whether it may
still go on. Reporting the same (type, step, subject) again updates that episode (storage
keeps one row per episode, so replaying a run never duplicates one); `Episodes` does the
bookkeeping for a detector. The runner adds the run id and the detector name.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Optional

from tracer.detection.episodes import Episodes
from tracer.detection.findings import SEVERITIES, Finding, finding
from tracer.records import CheckpointWrite, EventWrite

__all__ = ["SEVERITIES", "Detector", "DetectorContext", "Episodes", "Finding", "finding"]


class DetectorContext:
    """Run-wide detection settings shared by every detector (which series are losses)."""

    def __init__(self, loss_metrics: Sequence[str] = ("*loss*",)) -> None:
        self.loss_metrics = tuple(loss_metrics)

    def is_loss(self, series: str) -> bool:
        if series.startswith(("_", "grad/", "system/", "optimizer/")) or "/grad/" in series:
            return False
        lowered = series.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.loss_metrics)

    @staticmethod
    def is_user_metric(series: str) -> bool:
        """A metric the user logged (not one of Tracer's own grad/, system/ or _ series)."""
        return not (
            series.startswith(("_", "grad/", "system/", "optimizer/")) or ".grad/" in series
        )


class Detector:
    """Base class. Subclasses set `name`, `anomaly_types`, `defaults` and override `wants`
    plus whichever `observe*` methods they need. Settings come from
    `TracerConfig.detectors[name]`; an unknown setting is an error naming the closest one.
    """

    name: ClassVar[str] = ""
    anomaly_types: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    # Calm observations of a subject that close its episode (see `Episodes`); a detector may
    # replace `self.episodes` in `setup` with a gap taken from its settings.
    episode_gap: ClassVar[int] = 1
    # False: an opt-in detector, run only when TracerConfig.detectors names it (True or a
    # dict of settings): checks not yet solid enough to be on for everyone.
    enabled_by_default: ClassVar[bool] = True
    # The smallest value a numeric setting may take, where a smaller one would make the rule
    # fire on everything (a streak of 0 samples); a setting below it fails tracer.init.
    minimums: ClassVar[Mapping[str, float]] = {}

    def __init__(
        self,
        settings: Optional[Mapping[str, Any]] = None,
        context: Optional[DetectorContext] = None,
    ) -> None:
        settings = dict(settings or {})
        for key in settings:
            if key not in self.defaults:
                close = difflib.get_close_matches(key, list(self.defaults), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"detector {self.name!r} has no setting {key!r}{hint}")
            _check_type(self.name, key, self.defaults[key], settings[key])
            if key in self.minimums and settings[key] < self.minimums[key]:
                raise ValueError(
                    f"detector {self.name!r} setting {key!r} must be at least"
                    f" {self.minimums[key]:g}, got {settings[key]!r}"
                )
        self.settings: dict[str, Any] = {**self.defaults, **settings}
        self.context = context or DetectorContext()
        self.episodes = Episodes(self.episode_gap)
        self.setup()

    def setup(self) -> None:
        """Create per-run state (called at the end of __init__, settings already set)."""

    def wants(self, series: str) -> bool:
        """Whether `observe` should receive this series (asked once per series name)."""
        return False

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        return []

    def observe_event(self, event: EventWrite) -> list[Finding]:
        return []

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        return []

    def finish(self) -> list[Finding]:
        """The run ended (online at `finish()`, offline when replaying an ended run): report
        the episodes still open as closed."""
        self.episodes.close_all()
        return self.episodes.drain()


def _check_type(detector: str, key: str, default: Any, value: Any) -> None:
    """A setting must be of its default's kind (a float setting takes an int too), so that
    `{"samples": "3"}` is refused at `tracer.init`, not found later as a detector failing on
    the writer thread. A default of None or of another kind is not checked."""
    if isinstance(default, bool):
        kinds: tuple[type, ...] = (bool,)
    elif isinstance(default, int):
        kinds = (int,)
    elif isinstance(default, float):
        kinds = (int, float)
    elif isinstance(default, str):
        kinds = (str,)
    else:
        return
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise ValueError(f"detector {detector!r} setting {key!r} must be {names}, got {value!r}")
