"""Gradient detectors: explosion, vanishing and dead layers, relative to the run itself.

- `gradient_explosion`: a global gradient norm (`grad/global_norm`, and `m1.grad/...` for
  further watched models) above `factor` (10) x its running median over `window` (64)
  captures, or above `ceiling` (1e6; not when the capture point is "backward_end", where
  values are loss-scaled under AMP). One report per episode: another needs `cooldown` (100)
  captures below the limit first, so a regime change is not reported over and over; and, at each
  checkpoint, a layer whose largest norm since the previous checkpoint is `factor` x the
  median of its earlier checkpoints.
- `vanishing_gradient`: at a checkpoint, a layer whose largest norm over every capture since
  the previous checkpoint (so: below it at each of those captures) is under `min_norm`, or
  under `ratio` x the median layer norm of that checkpoint.
- `dead_layer`: a layer whose gradient was exactly zero at every capture since the previous
  checkpoint.
Each reports once per subject until the condition clears.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.stats import SAFETY, RobustBaseline, all_finite, segments
from tracer.storage.base import CheckpointWrite, EventWrite


def _layer_peaks(checkpoint: CheckpointWrite) -> dict[str, float]:
    peaks = {}
    for layer, stats in checkpoint["gradient_stats"].items():
        peak = stats.get("max_norm_since_checkpoint", stats.get("norm", math.nan))
        if peak == peak:  # layers without a capture in the interval read NaN
            peaks[layer] = float(peak)
    return peaks


class GradientExplosionDetector(Detector):
    name = "gradient_explosion"
    anomaly_types = ("gradient_explosion",)
    defaults = {
        "factor": 10.0,
        "ceiling": 1e6,
        "window": 64,
        "min_count": 32,
        "min_checkpoints": 2,
        "cooldown": 100,
    }

    def setup(self) -> None:
        self._baselines: dict[str, RobustBaseline] = {}
        self._exploding: dict[str, bool] = {}  # per layer, from checkpoints
        self._calm: dict[str, int] = {}
        self._layer_history: dict[str, list[float]] = {}
        self._scaled = False

    def wants(self, series: str) -> bool:
        return series.endswith("grad/global_norm")

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] == "gradient_capture" and event["data"].get("point") == "backward_end":
            self._scaled = True  # values may carry a GradScaler's loss scale
        return []

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        factor, ceiling = self.settings["factor"], self.settings["ceiling"]
        baseline = self._baselines.get(series)
        if baseline is None:
            baseline = self._baselines[series] = RobustBaseline(
                self.settings["window"], min_count=self.settings["min_count"]
            )
        calm = self._calm.get(series, self.settings["cooldown"])  # captures since the last
        found: list[Finding] = []  # one above the limit; a new episode needs `cooldown` calm
        for start, end in segments(baseline, len(values)):
            segment = values[start:end]
            limit = factor * baseline.median if baseline.ready else math.inf
            if not self._scaled:
                limit = min(limit, ceiling)
            if all_finite(segment) and max(segment) <= limit * SAFETY:
                calm += len(segment)  # the usual case, at C speed
                baseline.extend(segment)
                continue
            for step, value in zip(steps[start:end], segment, strict=True):
                if value != value or value == math.inf:
                    continue  # non-finite is nan_or_inf's
                baseline.push(value)  # a lasting level change becomes the new normal
                if value <= limit:
                    calm += 1
                    continue
                if calm >= self.settings["cooldown"]:
                    found.append(self._report(series, step, value, limit, baseline))
                calm = 0
        self._calm[series] = calm
        return found

    def _report(
        self, series: str, step: int, value: float, limit: float, baseline: RobustBaseline
    ) -> Finding:
        relative = baseline.ready and (limit < self.settings["ceiling"] or self._scaled)
        return finding(
            step,
            "gradient_explosion",
            "critical",
            series,
            f"{series} {value:.4g} at step {step}, {value / baseline.median:.1f}x its running"
            f" median {baseline.median:.4g}"
            if relative
            else f"{series} {value:.4g} at step {step} is above {limit:g}",
            value=value,
            baseline=baseline.median,
            threshold=limit,
        )

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        found = []
        for layer, peak in _layer_peaks(checkpoint).items():
            if not math.isfinite(peak):
                continue  # non-finite gradients are nan_or_inf's
            history = self._layer_history.setdefault(layer, [])
            key = "layer:" + layer
            if len(history) >= self.settings["min_checkpoints"]:
                usual = statistics.median(history[-16:])
                if usual > 0 and peak > self.settings["factor"] * usual:
                    if not self._exploding.get(key):
                        self._exploding[key] = True
                        found.append(
                            finding(
                                checkpoint["step"],
                                "gradient_explosion",
                                "critical",
                                layer,
                                f"layer {layer} reached norm {peak:.4g} since the last checkpoint,"
                                f" {peak / usual:.1f}x its usual {usual:.4g}",
                                value=peak,
                                baseline=usual,
                                threshold=self.settings["factor"] * usual,
                            )
                        )
                    continue
            self._exploding[key] = False
            history.append(peak)
        return found


class VanishingGradientDetector(Detector):
    name = "vanishing_gradient"
    anomaly_types = ("vanishing_gradient",)
    defaults = {"min_norm": 1e-10, "ratio": 1e-4}

    def setup(self) -> None:
        self._vanished: set[str] = set()

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        peaks = {k: v for k, v in _layer_peaks(checkpoint).items() if math.isfinite(v)}
        live = [v for v in peaks.values() if v > 0]  # exact zeros are dead_layer's
        if not live:
            return []
        typical = statistics.median(live)
        limit = max(self.settings["min_norm"], self.settings["ratio"] * typical)
        found = []
        for layer, peak in peaks.items():
            if 0 < peak < limit:
                if layer not in self._vanished:
                    self._vanished.add(layer)
                    found.append(
                        finding(
                            checkpoint["step"],
                            "vanishing_gradient",
                            "warning",
                            layer,
                            f"layer {layer}: gradient norm at most {peak:.3g} at every capture"
                            f" since the last checkpoint (median layer {typical:.3g})",
                            value=peak,
                            baseline=typical,
                            threshold=limit,
                        )
                    )
            else:
                self._vanished.discard(layer)
        return found


class DeadLayerDetector(Detector):
    name = "dead_layer"
    anomaly_types = ("dead_layer",)
    defaults = {}

    def setup(self) -> None:
        self._dead: set[str] = set()

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        found = []
        for layer, peak in _layer_peaks(checkpoint).items():
            if peak == 0.0:
                if layer not in self._dead:
                    self._dead.add(layer)
                    found.append(
                        finding(
                            checkpoint["step"],
                            "dead_layer",
                            "warning",
                            layer,
                            f"layer {layer}: gradient exactly zero at every capture since the"
                            " last checkpoint",
                            value=0.0,
                            threshold=0.0,
                        )
                    )
            else:
                self._dead.discard(layer)
        return found
