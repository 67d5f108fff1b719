"""Loss detectors, on every series the context counts as a loss (default: names with "loss").

- `loss_spike` / `loss_drop`: robust z-score of each value against the running median and
  MAD of the previous `window` (64) values; |z| > `z_threshold` (12) reports, then the series
  is quiet for `cooldown` (16) values (a few corrupted batches in a row are one spike). The
  per-batch loss of small batches is right-skewed, so healthy runs reach 8-10 robust sigmas
  now and then, while a batch with corrupted targets scores orders of magnitude higher.
- `loss_divergence`: a sustained rise: the last `rising_blocks` (3) block medians (blocks of
  `block` (20) values) each rose, and the latest is above (1 + `rise`) x the best block
  median (`rise` 1.0: twice the best; healthy runs at a high learning rate bump 1.5-1.8x
  for a few blocks and recover).
- `loss_plateau`: no block median (blocks of `block` (25) values) improved on the best by
  `min_delta` (0.1%, relative) and by `noise_sigmas` (3) standard errors of a block median for
  `patience` (4) blocks, like SageMaker Debugger's LossNotDecreasing. Without the noise margin
  a flat but noisy loss keeps setting chance new bests and is reported far too late.
Each reports once per episode and re-arms when the condition clears.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.stats import SAFETY, BlockMedians, RobustBaseline, all_finite, segments


class LossSpikeDetector(Detector):
    name = "loss_spike"
    anomaly_types = ("loss_spike", "loss_drop")
    defaults = {"z_threshold": 12.0, "window": 64, "min_count": 32, "cooldown": 16}

    def setup(self) -> None:
        self._baselines: dict[str, RobustBaseline] = {}
        self._quiet: dict[str, int] = {}

    def wants(self, series: str) -> bool:
        return self.context.is_loss(series)

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        baseline = self._baselines.get(series)
        if baseline is None:
            baseline = self._baselines[series] = RobustBaseline(
                self.settings["window"], min_count=self.settings["min_count"]
            )
        threshold, cooldown = self.settings["z_threshold"], self.settings["cooldown"]
        quiet = self._quiet.get(series, 0)
        found: list[Finding] = []
        for start, end in segments(baseline, len(values)):
            segment = values[start:end]
            if all_finite(segment):
                if not baseline.ready:
                    quiet = max(0, quiet - len(segment))
                    baseline.extend(segment)
                    continue
                reach = threshold * baseline.sigma() * SAFETY
                if (
                    baseline.median - reach <= min(segment)
                    and max(segment) <= baseline.median + reach
                ):
                    quiet = max(0, quiet - len(segment))  # the usual case: nothing unusual
                    baseline.extend(segment)
                    continue
            for step, value in zip(steps[start:end], segment, strict=True):
                if value - value != 0.0:
                    continue  # non-finite: nan_or_inf
                if baseline.ready:
                    z = (value - baseline.median) / baseline.sigma()
                    if abs(z) > threshold:
                        if quiet == 0:
                            found.append(self._report(series, step, value, z, baseline))
                        quiet = cooldown
                        continue  # outliers stay out of the baseline
                quiet = max(0, quiet - 1)
                baseline.push(value)
        self._quiet[series] = quiet
        return found

    def _report(
        self, series: str, step: int, value: float, z: float, baseline: RobustBaseline
    ) -> Finding:
        threshold = self.settings["z_threshold"]
        return finding(
            step,
            "loss_spike" if z > 0 else "loss_drop",
            "warning",
            series,
            f"{series} {value:.4g} at step {step} is {abs(z):.1f} robust sigmas"
            f" {'above' if z > 0 else 'below'} its running median {baseline.median:.4g}",
            value=value,
            baseline=baseline.median,
            threshold=baseline.median + math.copysign(threshold, z) * baseline.sigma(),
        )


class _BlockMedianDetector(Detector):
    """Shared by the block-median loss detectors: one `BlockMedians` per loss series."""

    def setup(self) -> None:
        self._blocks: dict[str, BlockMedians] = {}

    def wants(self, series: str) -> bool:
        return self.context.is_loss(series)

    def _completed_blocks(
        self, series: str, steps: Sequence[int], values: Sequence[float]
    ) -> tuple[BlockMedians, list[tuple[int, int]]]:
        """Feed the values; returns the series' blocks and (block index, step) of each block
        they completed, in order."""
        blocks = self._blocks.get(series)
        if blocks is None:
            blocks = self._blocks[series] = BlockMedians(self.settings["block"])
        completed = blocks.feed(steps, values)
        first = len(blocks.medians) - len(completed)
        return blocks, [(first + offset, step) for offset, step in enumerate(completed)]


class LossDivergenceDetector(_BlockMedianDetector):
    name = "loss_divergence"
    anomaly_types = ("loss_divergence",)
    defaults = {"block": 20, "rising_blocks": 3, "rise": 1.0}

    def setup(self) -> None:
        super().setup()
        self._best: dict[str, float] = {}
        self._diverging: dict[str, bool] = {}

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        rising, rise = self.settings["rising_blocks"], self.settings["rise"]
        found = []
        blocks, completed = self._completed_blocks(series, steps, values)
        for index, step in completed:
            latest = blocks.medians[index]
            best = min(self._best.get(series, math.inf), latest)
            self._best[series] = best
            recent = blocks.medians[max(0, index - rising) : index + 1]
            climbing = len(recent) == rising + 1 and all(
                a < b for a, b in itertools.pairwise(recent)
            )
            if climbing and latest > (1 + rise) * best:
                if not self._diverging.get(series):
                    self._diverging[series] = True
                    found.append(
                        finding(
                            step,
                            "loss_divergence",
                            "critical",
                            series,
                            f"{series} has risen for {rising} blocks of {blocks.size} steps to"
                            f" {latest:.4g}, {latest / best:.2f}x its best {best:.4g}",
                            value=latest,
                            baseline=best,
                            threshold=(1 + rise) * best,
                        )
                    )
            elif latest <= (1 + rise) * best:
                self._diverging[series] = False
        return found


class LossPlateauDetector(_BlockMedianDetector):
    name = "loss_plateau"
    anomaly_types = ("loss_plateau",)
    defaults = {"block": 25, "patience": 4, "min_delta": 0.001, "noise_sigmas": 3.0}

    def setup(self) -> None:
        super().setup()
        self._best: dict[str, tuple[float, int]] = {}  # best median, its block index
        self._flat: dict[str, bool] = {}

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        patience, min_delta = self.settings["patience"], self.settings["min_delta"]
        noise_sigmas = self.settings["noise_sigmas"]
        found = []
        blocks, completed = self._completed_blocks(series, steps, values)
        for index, step in completed:
            latest = blocks.medians[index]
            best, best_index = self._best.get(series, (math.inf, index))
            # A new best must beat chance: `noise_sigmas` standard errors of a block median.
            margin = max(min_delta * abs(best), noise_sigmas * blocks.noise[index])
            if best == math.inf or latest < best - margin:
                self._best[series] = (latest, index)
                self._flat[series] = False
                continue
            if index - best_index >= patience and not self._flat.get(series):
                self._flat[series] = True
                found.append(
                    finding(
                        step,
                        "loss_plateau",
                        "info",
                        series,
                        f"{series} has not improved on {best:.4g} for {index - best_index}"
                        f" blocks of {blocks.size} steps",
                        value=latest,
                        baseline=best,
                        threshold=best * (1 - min_delta),
                    )
                )
        return found
