"""Loss detectors, on every series the context counts as a loss (default: names with "loss").

Every rule judges a value against the run's own recent noise, never against an all-time
extreme: the lowest of many noisy values drifts down as a run grows, so a rule like "x times
the best" fires more the longer the run (a 200,000-step run near convergence would be
"diverging" every few thousand steps).

- `loss_spike` (warning) / `loss_drop` (info): robust z-score of each value against the
  running median and MAD of the previous `window` (64) values; |z| > `z_threshold` (12). The
  per-batch loss of small batches is right-skewed, so healthy runs reach 8-11 robust sigmas
  now and then, while a batch with corrupted targets scores orders of magnitude higher.
  A spike must also rise above the median by `min_rise_of_start` (10%) of the way back to the
  largest of the first `min_count` values: near convergence the MAD is tiny and a hard batch
  scores 13 sigmas while the loss is still a tenth of where it began.
  Outliers stay out of the baseline; spikes less than `cooldown` (16) values apart are one
  episode. A sudden drop is rarely a fault (warmup ending, an lr step), hence info.
- `loss_divergence` (warning; critical past (1 + `critical_rise`) x the reference): the
  median of the last `recent` (9) values above a reference: the median of the `window` (64)
  values that ended `lag` (24) to 39 values before them (it is refreshed every 16 values),
  plus max(`z_threshold` (4) robust sigmas of those values, `rise` (10%) of their median). A
  median of 9 values is robust to a few bad batches, so this is a sustained climb, found
  within about `recent` steps of the loss leaving its noise; the lag keeps a slow climb from
  dragging its own reference up. It must be a climb: the medians of the oldest, middle and
  newest thirds of those values rise (within one sigma), so a spike and the elevated loss
  while the model recovers from it are left to `loss_spike`.
- `loss_plateau`: see `tracer.detection.plateau`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from functools import partial

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.episodes import Episodes
from tracer.detection.stats import SAFETY, RobustBaseline, all_finite, median_of_sorted, segments


class LossSpikeDetector(Detector):
    name = "loss_spike"
    anomaly_types = ("loss_spike", "loss_drop")
    defaults = {
        "z_threshold": 12.0,
        "window": 64,
        "min_count": 32,
        "cooldown": 16,
        "min_rise_of_start": 0.1,
    }

    def setup(self) -> None:
        self._baselines: dict[str, RobustBaseline] = {}
        self._start_peaks: dict[str, float] = {}  # the largest value before the baseline
        self.episodes = Episodes(self.settings["cooldown"])

    def wants(self, series: str) -> bool:
        return self.context.is_loss(series)

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        baseline = self._baselines.get(series)
        if baseline is None:
            baseline = self._baselines[series] = RobustBaseline(
                self.settings["window"], min_count=self.settings["min_count"]
            )
        threshold = self.settings["z_threshold"]
        episodes = self.episodes
        for start, end in segments(baseline, len(values)):
            segment = values[start:end]
            if all_finite(segment):
                if not baseline.ready:
                    peak = max(segment, default=-math.inf)
                    self._start_peaks[series] = max(self._start_peaks.get(series, peak), peak)
                    baseline.extend(segment)
                    continue
                # the cheap floor of sigma settles most blocks; the exact one the rest
                low, high = min(segment), max(segment)
                reach = threshold * baseline.sigma_floor() * SAFETY
                inside = baseline.median - reach <= low and high <= baseline.median + reach
                if not inside:
                    reach = threshold * baseline.sigma() * SAFETY
                    inside = baseline.median - reach <= low and high <= baseline.median + reach
                if inside:
                    episodes.calm(series, len(segment))  # the usual case: nothing unusual
                    baseline.extend(segment)
                    continue
            for step, value in zip(steps[start:end], segment, strict=True):
                if value - value != 0.0:
                    continue  # non-finite: nan_or_inf
                if baseline.ready:
                    z = (value - baseline.median) / baseline.sigma()
                    if abs(z) > threshold and (
                        z < 0 or self._rises_enough(series, value, baseline)
                    ):
                        kind = "loss_spike" if z > 0 else "loss_drop"
                        episodes.hit(
                            kind,
                            series,
                            step,
                            partial(self._report, series, step, value, z, baseline),
                        )
                        continue  # outliers stay out of the baseline
                elif value > self._start_peaks.get(series, -math.inf):
                    self._start_peaks[series] = value
                episodes.calm(series)
                baseline.push(value)
        return episodes.drain()

    def _rises_enough(self, series: str, value: float, baseline: RobustBaseline) -> bool:
        """A spike must also rise by `min_rise_of_start` of the way from the median back up
        to the run's first values: at loss 0.01 a classifier's hard batch scores 13 robust
        sigmas at 0.1, a tenth of what it fell from."""
        start = self._start_peaks.get(series, math.inf)
        share = float(self.settings["min_rise_of_start"])
        return value - baseline.median >= share * (start - baseline.median)

    def _report(
        self, series: str, step: int, value: float, z: float, baseline: RobustBaseline
    ) -> Finding:
        threshold = self.settings["z_threshold"]
        spike = z > 0
        return finding(
            step,
            "loss_spike" if spike else "loss_drop",
            "warning" if spike else "info",
            series,
            f"{series} {value:.4g} at step {step} is {abs(z):.1f} robust sigmas"
            f" {'above' if spike else 'below'} its running median {baseline.median:.4g}",
            value=value,
            baseline=baseline.median,
            threshold=baseline.median + math.copysign(threshold, z) * baseline.sigma(),
            hint=f"look at the batch of step {step} (tracer show, samples at that step) for"
            " corrupt inputs or labels; if spikes repeat, lower the lr or clip gradients"
            if spike
            else "a sudden improvement: check for a data leak or a changed evaluation set",
        )


class _Climb:
    """One series' divergence state: recent values, the lagging reference."""

    __slots__ = ("above", "high", "pending", "recent", "reference")

    def __init__(self, window: int, recent: int) -> None:
        self.reference = RobustBaseline(window, refresh=16, min_count=window // 2)
        self.pending: list[float] = []  # values not yet in the reference (the newest last)
        self.recent: deque[float] = deque(maxlen=recent)  # the last values...
        self.above: deque[bool] = deque(maxlen=recent)  # ...and whether each was above the limit
        self.high = 0  # how many of `recent` are above the limit


class LossDivergenceDetector(Detector):
    name = "loss_divergence"
    anomaly_types = ("loss_divergence",)
    defaults = {
        "window": 64,
        "lag": 24,
        "recent": 9,
        "z_threshold": 4.0,
        "rise": 0.1,
        "critical_rise": 1.0,
        "cooldown": 50,
    }

    def setup(self) -> None:
        self._climbs: dict[str, _Climb] = {}
        self.episodes = Episodes(self.settings["cooldown"])
        self._z = float(self.settings["z_threshold"])
        self._rise = float(self.settings["rise"])
        self._calm_marks = [False] * int(self.settings["recent"])

    def wants(self, series: str) -> bool:
        return self.context.is_loss(series)

    def _limit(self, climb: _Climb, floor: bool = False) -> float:
        """The level above which a value counts as high; with `floor`, a lower bound of it
        that needs no MAD (enough to pass most calm blocks)."""
        reference = climb.reference
        if not reference.ready:
            return math.inf
        sigma = reference.sigma_floor() if floor else reference.sigma()
        spread = max(self.settings["z_threshold"] * sigma, 0.0)
        return float(reference.median + max(spread, self.settings["rise"] * abs(reference.median)))

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        if not all_finite(values):
            kept = [(s, v) for s, v in zip(steps, values, strict=True) if v - v == 0.0]
            steps, values = [s for s, _ in kept], [v for _, v in kept]
        climb = self._climbs.get(series)
        if climb is None:
            climb = self._climbs[series] = _Climb(self.settings["window"], self.settings["recent"])
        recent = self.settings["recent"]
        lag = self.settings["lag"] + recent
        reference, pending, episodes = climb.reference, climb.pending, self.episodes
        z, rise, calm_marks = self._z, self._rise, self._calm_marks
        start, count = 0, len(values)
        while start < count:
            # The reference changes only when values leave `pending` into it: process the
            # values up to the next change with one limit.
            room = reference.until_change()
            room = (room if room > 1 else 1) + (lag - len(pending) if len(pending) < lag else 0)
            end = start + room if start + room < count else count
            segment = values[start:end]
            calm, median = climb.high == 0, reference.median
            if calm and median == median:  # (NaN, not ready: no limit yet, all calm)
                # `_limit(floor=True)` inline: the floor of sigma settles most calm blocks
                top = max(segment)
                spread, least = z * reference.sigma_floor(), rise * abs(median)
                limit = median + (spread if spread > least else least)
                calm = top <= limit * SAFETY or top <= self._limit(climb) * SAFETY
            if calm:
                climb.recent.extend(segment[-recent:])
                climb.above.extend(calm_marks[: end - start])
                episodes.calm(series, end - start)
            else:
                for step, value in zip(steps[start:end], segment, strict=True):
                    self._judge(series, climb, step, value)
            pending.extend(segment)
            leaving = len(pending) - lag
            if leaving > 0:
                reference.extend(pending[:leaving])
                del pending[:leaving]
            start = end
        return episodes.drain()

    def _judge(self, series: str, climb: _Climb, step: int, value: float) -> None:
        limit = self._limit(climb)
        above = value > limit
        if len(climb.above) == climb.above.maxlen and climb.above[0]:
            climb.high -= 1
        climb.recent.append(value)
        climb.above.append(above)
        climb.high += above
        if climb.high * 2 <= len(climb.recent) or len(climb.recent) < (climb.recent.maxlen or 0):
            self.episodes.calm(series)
            return
        values = list(climb.recent)
        third = max(1, len(values) // 3)
        old, middle, new = (
            median_of_sorted(sorted(part))
            for part in (values[:third], values[third:-third], values[-third:])
        )
        noise = climb.reference.sigma()
        if new < middle - noise or middle < old - noise:
            self.episodes.calm(series)  # high but not climbing: a spike and its aftermath
            return
        latest = median_of_sorted(sorted(values))
        reference = climb.reference.median
        severe = latest > (1 + self.settings["critical_rise"]) * reference
        self.episodes.hit(
            "loss_divergence",
            series,
            step,
            lambda: finding(
                step,
                "loss_divergence",
                "critical" if severe else "warning",
                series,
                f"{series} is climbing: the median of its last {len(climb.recent)} values is"
                f" {latest:.4g} at step {step}, {latest / reference:.2f}x its recent level"
                f" {reference:.4g} (noise {climb.reference.sigma():.3g})",
                value=latest,
                baseline=reference,
                threshold=limit,
                hint="lower the learning rate (or its warmup peak) and clip gradients;"
                " restart from the last checkpoint saved before this step",
            ),
            severity="critical" if severe else "warning",
        )
