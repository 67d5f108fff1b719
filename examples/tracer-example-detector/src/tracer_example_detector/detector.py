"""`lr_out_of_range`: the logged learning rate left the range the user expects.

A learning rate outside its range is one of the cheapest training bugs to catch and one of
the most expensive to miss: a scheduler configured in the wrong unit (3e-4 written as 3e-2),
a warmup that never stops climbing, a restart schedule that jumps to its peak, a sign error
that makes the rate negative. The loss detectors see the consequence many steps later; this
detector sees the cause at the step it happens.

It watches every series whose name (or its last `/` component) matches one of `metrics`
(fnmatch patterns, case-insensitive; default "lr" and "learning_rate", so "train/lr" counts
too; add "lr-*" for Lightning's LearningRateMonitor). A value below `min_lr` or above
`max_lr` starts an episode, reported once at its first step; the episode ends when the value
is back in range, and the next excursion is reported again. NaN and inf are left to
`nan_or_inf`. Above the range is "critical" (training usually diverges), below is a
"warning" (training stalls).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

from tracer.detection import Detector, Finding, finding


class LearningRateRangeDetector(Detector):
    """Reports a learning rate outside [`min_lr`, `max_lr`], once per episode per series.

    Settings (`TracerConfig.detectors["lr_out_of_range"]`): `metrics` (patterns of the
    series to watch), `min_lr` (default 0: only a negative rate is wrong, so a warmup or a
    cosine decay that reaches 0 is fine), `max_lr` (default 1.0).
    """

    name = "lr_out_of_range"
    anomaly_types = ("lr_out_of_range",)
    defaults = {"metrics": ("lr", "learning_rate"), "min_lr": 0.0, "max_lr": 1.0}

    def setup(self) -> None:
        metrics = self.settings["metrics"]
        patterns = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(f"lr_out_of_range: metrics must be names or patterns, got {metrics!r}")
        self._patterns = tuple(p.lower() for p in patterns)
        self._low = float(self.settings["min_lr"])
        self._high = float(self.settings["max_lr"])
        if not self._low < self._high:
            raise ValueError(
                f"lr_out_of_range: min_lr ({self._low:g}) must be below max_lr ({self._high:g})"
            )
        self._outside: dict[str, bool] = {}
        self._last_in_range: dict[str, float] = {}

    def wants(self, series: str) -> bool:
        if not self.context.is_user_metric(series):
            return False
        lowered = series.lower()
        last = lowered.rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(lowered, p) or fnmatch.fnmatchcase(last, p) for p in self._patterns
        )

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        low, high = self._low, self._high
        outside = self._outside.get(series, False)
        last = self._last_in_range.get(series, math.nan)
        found = []
        for step, value in zip(steps, values, strict=True):
            if value - value != 0.0:
                continue  # NaN or inf: nan_or_inf reports it
            if low <= value <= high:
                outside = False
                last = value
                continue
            if outside:
                continue  # the same episode
            outside = True
            above = value > high
            bound = high if above else low
            side = "above max_lr" if above else "below min_lr"
            was = f" (was {last:.4g})" if last == last else ""
            found.append(
                finding(
                    step,
                    "lr_out_of_range",
                    "critical" if above else "warning",
                    series,
                    f"{series} is {value:.4g} at step {step}, {side} {bound:g}{was}",
                    value=value,
                    baseline=last,
                    threshold=bound,
                )
            )
        self._outside[series] = outside
        self._last_in_range[series] = last
        return found
