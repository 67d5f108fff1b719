"""Silent-bug detectors fed by Tracer's own step series: streaks no healthy run shows.

- `skipped_steps`: `optimizer/skipped_step` at `steps` (20) consecutive tracer steps: the
  optimizer (a GradScaler after an overflow at every step, or the non-finite skip) has not
  updated the model since. Critical: the run cannot learn.
It depends only on the order of points, so online and offline agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding


class SkippedStepsDetector(Detector):
    name = "skipped_steps"
    anomaly_types = ("skipped_steps",)
    defaults = {"steps": 20}
    minimums = {"steps": 1}

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
