"""Gradient detectors: explosion, vanishing and dead layers, relative to the run itself.

- `gradient_explosion`: a global gradient norm (`grad/global_norm`, and `m1.grad/...` for
  further watched models) above `factor` (8) x its running median over `window` (64)
  captures, or above `ceiling` (1e6; not when the capture point is "backward_end", where
  values are loss-scaled under AMP), and above `start_margin` (2) x the largest of its first
  `min_count` (32) captures: a converged run's norm falls 10-50x below where it started,
  and a bump of Adam near its minimum (full-batch regression: 0.02 to 1.07 in 10 steps, back
  to 0.09 two steps later; later bumps reach 1.2-1.3x the first norms and settle in ~15
  steps, the loss up 30-80%) or a hard batch of a classifier at loss ~0.01 is then 8-25x its
  median while still within the range of the run's first steps. One report per episode:
  another needs `cooldown` (100) captures below the limit first, so a regime change is not
  reported over and over; and, at each
  checkpoint, a layer whose largest norm since the previous checkpoint is `factor` x the
  median of its last 16 checkpoints and at least `min_share` (1%) of the large layers' (the
  90th percentile of that checkpoint), so a layer recovering from a vanished gradient is not
  an explosion. Flagged peaks join that history, so a lasting new level ends the episode.
  On the healthy benchmark runs the global norm stays under 4x its running median (batch
  sizes 4 to 256, every schedule), so 8 leaves a factor of 2.
- `vanishing_gradient`: at a checkpoint, a weight (biases aside) whose largest norm over every
  capture since the previous checkpoint (so: below it at each of those captures) is under
  `ratio` (1e-4) x the norm of the model's large-gradient layers (the `reference_quantile`
  (0.9) of the weights' norms), or under `min_norm` (0: off). Against the median layer, as
  before, a deep sigmoid net hid its vanishing: most of its layers vanish together.
- `dead_layer`: a layer whose gradient was exactly zero at every capture since the previous
  checkpoint.
Each reports one episode per subject while the condition lasts (an exploding layer's closes
after `layer_cooldown` (3) checkpoints without it, a vanishing or dead layer's at the first;
the global norm's after `cooldown` calm captures).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import partial

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.episodes import Episodes
from tracer.detection.stats import SAFETY, RobustBaseline, all_finite, segments
from tracer.records import CheckpointWrite, EventWrite

_EXPLOSION_HINT = (
    "lower the learning rate or clip gradients (clip_grad_norm_); the per-layer norms of the"
    " checkpoint show where it starts"
)


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
        "factor": 8.0,
        "ceiling": 1e6,
        "window": 64,
        "min_count": 32,
        "min_checkpoints": 2,
        "cooldown": 100,
        "layer_cooldown": 3,
        "min_share": 0.01,
        "start_margin": 2.0,
    }

    def setup(self) -> None:
        self._baselines: dict[str, RobustBaseline] = {}
        self._start_peaks: dict[str, float] = {}  # the largest norm before the baseline was ready
        self._layer_history: dict[str, list[float]] = {}
        self._scaled = False
        # A global-norm episode ends after `cooldown` calm captures; a layer's after
        # `layer_cooldown` calm checkpoints (an unstable layer swings 100x between checkpoints:
        # one episode, not one per swing).
        self.episodes = Episodes(self.settings["cooldown"])
        self._layer_episodes = Episodes(self.settings["layer_cooldown"])

    def finish(self) -> list[Finding]:
        return super().finish() + self._finish_layers()

    def _finish_layers(self) -> list[Finding]:
        self._layer_episodes.close_all()
        return self._layer_episodes.drain()

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
        episodes = self.episodes
        margin = self.settings["start_margin"]
        for start, end in segments(baseline, len(values)):
            segment = values[start:end]
            if baseline.ready:
                limit = factor * baseline.median
                if margin:
                    limit = max(limit, margin * self._start_peaks.get(series, 0.0))
            else:
                limit = math.inf
                finite = [v for v in segment if math.isfinite(v)]
                if finite:
                    peak = max(self._start_peaks.get(series, 0.0), max(finite))
                    self._start_peaks[series] = peak
            if not self._scaled:
                limit = min(limit, ceiling)
            if all_finite(segment) and max(segment) <= limit * SAFETY:
                episodes.calm(series, len(segment))  # the usual case, at C speed
                baseline.extend(segment)
                continue
            for step, value in zip(steps[start:end], segment, strict=True):
                if value != value or value == math.inf:
                    continue  # non-finite is nan_or_inf's
                baseline.push(value)  # a lasting level change becomes the new normal
                if value <= limit:
                    episodes.calm(series)
                    continue
                episodes.hit(
                    "gradient_explosion",
                    series,
                    step,
                    partial(self._report, series, step, value, limit, baseline),
                )
        return episodes.drain()

    def _report(
        self, series: str, step: int, value: float, limit: float, baseline: RobustBaseline
    ) -> Finding:
        relative = baseline.ready and (limit < self.settings["ceiling"] or self._scaled)
        message = f"{series} {value:.4g} at step {step} is above {limit:g}"
        start = self._start_peaks.get(series, 0.0)
        if relative and baseline.median > 0 and start > 0:
            message = (
                f"{series} {value:.4g} at step {step}, {value / baseline.median:.1f}x its"
                f" running median {baseline.median:.4g} and {value / start:.1f}x its peak of"
                f" the first captures {start:.4g}"
            )
        return finding(
            step,
            "gradient_explosion",
            "critical",
            series,
            message,
            value=value,
            baseline=baseline.median,
            threshold=limit,
            hint=f"lower the learning rate or clip gradients (clip_grad_norm_); look at the"
            f" batch of step {step}",
        )

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        step = checkpoint["step"]
        factor = self.settings["factor"]
        peaks = _layer_peaks(checkpoint)
        finite = sorted(p for p in peaks.values() if math.isfinite(p))
        # A layer climbing out of a vanished gradient (1e-15 to 1e-12) is no explosion: only
        # a layer whose gradient matters next to the model's large ones can explode.
        floor = self.settings["min_share"] * finite[int(0.9 * (len(finite) - 1))] if finite else 0
        for layer, peak in peaks.items():
            if not math.isfinite(peak):
                continue  # non-finite gradients are nan_or_inf's
            history = self._layer_history.setdefault(layer, [])
            usual = statistics.median(history[-16:]) if history else 0.0
            if (
                len(history) >= self.settings["min_checkpoints"]
                and usual > 0
                and peak > factor * usual
                and peak >= floor
            ):
                self._layer_episodes.hit(
                    "gradient_explosion",
                    layer,
                    step,
                    finding(
                        step,
                        "gradient_explosion",
                        "critical",
                        layer,
                        f"layer {layer} reached norm {peak:.4g} since the last checkpoint,"
                        f" {peak / usual:.1f}x its usual {usual:.4g}",
                        value=peak,
                        baseline=usual,
                        threshold=factor * usual,
                        hint=_EXPLOSION_HINT,
                    ),
                )
            else:
                self._layer_episodes.calm(layer)
            history.append(peak)
        return self._layer_episodes.drain()


class VanishingGradientDetector(Detector):
    name = "vanishing_gradient"
    anomaly_types = ("vanishing_gradient",)
    defaults = {"min_norm": 0.0, "ratio": 1e-4, "reference_quantile": 0.9}

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        peaks = {
            layer: peak
            for layer, peak in _layer_peaks(checkpoint).items()
            if math.isfinite(peak) and not _is_bias(layer)
        }
        live = sorted(v for v in peaks.values() if v > 0)  # exact zeros are dead_layer's
        if len(live) < 2:
            return []
        reference = live[min(len(live) - 1, int(self.settings["reference_quantile"] * len(live)))]
        limit = max(self.settings["min_norm"], self.settings["ratio"] * reference)
        step = checkpoint["step"]
        for layer, peak in peaks.items():
            if 0 < peak < limit:
                self.episodes.hit(
                    "vanishing_gradient",
                    layer,
                    step,
                    finding(
                        step,
                        "vanishing_gradient",
                        "warning",
                        layer,
                        f"layer {layer}: gradient norm at most {peak:.3g} at every capture"
                        f" since the last checkpoint, {peak / reference:.1e}x the largest"
                        f" layers' ({reference:.3g})",
                        value=peak,
                        baseline=reference,
                        threshold=limit,
                    ),
                )
            else:
                self.episodes.calm(layer)
        return self.episodes.drain()


class DeadLayerDetector(Detector):
    name = "dead_layer"
    anomaly_types = ("dead_layer",)
    defaults = {}

    def observe_checkpoint(self, checkpoint: CheckpointWrite) -> list[Finding]:
        step = checkpoint["step"]
        for layer, peak in _layer_peaks(checkpoint).items():
            if peak == 0.0:
                self.episodes.hit(
                    "dead_layer",
                    layer,
                    step,
                    finding(
                        step,
                        "dead_layer",
                        "warning",
                        layer,
                        f"layer {layer}: gradient exactly zero at every capture since the"
                        " last checkpoint",
                        value=0.0,
                        threshold=0.0,
                    ),
                )
            else:
                self.episodes.calm(layer)
        return self.episodes.drain()


def _is_bias(layer: str) -> bool:
    """Biases are left to dead_layer: a bias feeding a normalisation layer has a gradient of
    (nearly) zero by construction, and a vanishing gradient shows in the weights anyway."""
    return layer.endswith("bias")
