"""Silent-bug detectors fed by Tracer's own step series: streaks no healthy run shows.

- `skipped_steps`: `optimizer/skipped_step` at `steps` (20) consecutive tracer steps: the
  optimizer (a GradScaler after an overflow at every step, or the non-finite skip) has not
  updated the model since. Critical: the run cannot learn.
- `gradients_not_reset`: the global gradient norm (`grad/global_norm`) rose at least
  `rises` (0.9) of its last `window` (20) captures and ended at least `growth` (4x) above
  where the window began: gradients are summed over steps, never reset. Critical.
Both depend only on the order of points, so online and offline agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import pairwise

from tracer.detection.base import Detector, Finding, finding


class SkippedStepsDetector(Detector):
    name = "skipped_steps"
    anomaly_types = ("skipped_steps",)
    defaults = {"steps": 20}

    def setup(self) -> None:
        self._last: dict[str, int] = {}
        self._streak: dict[str, int] = {}

    def wants(self, series: str) -> bool:
        return series.endswith("optimizer/skipped_step")

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        limit = self.settings["steps"]
        for step, value in zip(steps, values, strict=True):
            if value != 1.0:
                continue
            streak = self._streak.get(series, 0) + 1 if self._last.get(series) == step - 1 else 1
            self._streak[series], self._last[series] = streak, step
            if streak < limit:
                continue
            start = step - streak + 1
            self.episodes.hit(
                "skipped_steps",
                series,
                start,
                finding(
                    start,
                    "skipped_steps",
                    "critical",
                    series,
                    f"the optimizer skipped every one of the {limit} steps from step {start}:"
                    " the model has not been updated since",
                    value=float(streak),
                    threshold=float(limit),
                    hint="a GradScaler that finds inf/NaN gradients at every step: find the"
                    " layer that overflows (fp16 range), use bf16, lower the lr or the"
                    " initial loss scale",
                ),
            )
        return self.episodes.drain()


class GradientsNotResetDetector(Detector):
    name = "gradients_not_reset"
    enabled_by_default = False  # opt-in until proven beyond the silent-bug benchmark (README)
    anomaly_types = ("gradients_not_reset",)
    defaults = {"window": 20, "rises": 0.9, "growth": 4.0}

    def setup(self) -> None:
        self._recent: dict[str, deque[float]] = {}

    def wants(self, series: str) -> bool:
        return series.endswith("grad/global_norm")

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        window = int(self.settings["window"])
        recent = self._recent.setdefault(series, deque(maxlen=window + 1))
        for step, value in zip(steps, values, strict=True):
            if value != value or value in (float("inf"), float("-inf")):
                recent.clear()
                continue
            recent.append(value)
            if len(recent) <= window:
                continue
            history = list(recent)
            rises = sum(b > a for a, b in pairwise(history))
            growth = history[-1] / history[0] if history[0] > 0 else 0.0
            if rises < self.settings["rises"] * window or growth < self.settings["growth"]:
                self.episodes.calm(series)
                continue
            self.episodes.hit(
                "gradients_not_reset",
                series,
                step,
                finding(
                    step,
                    "gradients_not_reset",
                    "critical",
                    series,
                    f"{series} rose at {rises} of the last {window} steps, {growth:.1f}x:"
                    " gradients grow every step and are never reset",
                    value=history[-1],
                    baseline=history[0],
                    threshold=self.settings["growth"] * history[0],
                    hint="call optimizer.zero_grad() after each optimizer.step() (with"
                    " accumulation: after the step that ends each accumulation)",
                ),
            )
        return self.episodes.drain()
