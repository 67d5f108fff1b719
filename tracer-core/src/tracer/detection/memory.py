"""Memory detectors on the system sampler's series (process RSS, torch allocator, NVML).

- `memory_spike`: a sample above (1 + `jump`) x the running median of the previous samples
  and at least `min_mb` above it; or, for a GPU, used memory above `capacity` of its total.
- `memory_leak`: steady growth: over the last `window` samples a least-squares line with
  R^2 >= `min_r2` that rose by more than `min_growth` (relative) and `min_mb`.
- `memory_leak` at the step cadence, on `system/step/heap_in_use_mb` (what the C allocator
  has handed out: tensors, arrays; `system/step/rss_mb` where there is none, since a
  fragmented heap grows resident memory for a hundred steps without a leak) and
  `system/step/cuda_allocated_mb` (read every 10 steps by the memory probe): a least-squares
  line over the last
  `probe_window` (8) readings with R^2 >= `min_r2`, rising by `probe_min_mb` (32) and
  `probe_min_mb_per_step` (0.25); a leak of 1 MB a step is found about 80 steps in.
Series fed in name order, so a GPU's memory_total_mb is known before its memory_used_mb.

The sampler is time-based, so when steps are slower than its interval several samples land
on one step. Storage keeps one value per step (the last written), so each sample is judged
only once a later step's sample arrives (the last one of a series is never judged): a
repeated step replaces the held sample, and online detection sees exactly what offline
replay reads back.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.episodes import Episodes
from tracer.detection.stats import RobustBaseline

_MEMORY = re.compile(
    r"^system/(process_rss_mb|torch/(allocated|reserved)_mb|gpu\d+/memory_used_mb)$"
)
_GPU_TOTAL = re.compile(r"^system/(gpu\d+)/memory_total_mb$")
_PROBE = re.compile(r"^system/step/(rss|cuda_allocated|heap_in_use)_mb$")
_HEAP = "system/step/heap_in_use_mb"
_RSS = "system/step/rss_mb"


class MemoryDetector(Detector):
    name = "memory"
    anomaly_types = ("memory_spike", "memory_leak")
    defaults = {
        "jump": 0.5,
        "min_mb": 256.0,
        "capacity": 0.97,
        "window": 40,
        "min_r2": 0.9,
        "min_growth": 0.2,
        "spike_window": 16,
        "probe_window": 8,
        "probe_min_mb": 32.0,
        "probe_min_mb_per_step": 0.25,
    }

    def setup(self) -> None:
        self._baselines: dict[str, RobustBaseline] = {}
        self._recent: dict[str, deque[tuple[int, float]]] = {}
        self._totals: dict[str, float] = {}
        self._flagged: set[tuple[str, str]] = set()
        self._held: dict[str, tuple[int, float]] = {}  # per series: the latest step's sample
        self._probes: dict[str, deque[tuple[int, float]]] = {}
        self._heap = False  # the probe stores the heap series: rss_mb is not judged
        self.episodes = Episodes(2)  # step-cadence leaks: two calm readings end one

    def wants(self, series: str) -> bool:
        return bool(_MEMORY.match(series) or _GPU_TOTAL.match(series) or _PROBE.match(series))

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        if _PROBE.match(series):
            if series == _HEAP:  # named before rss_mb: seen first in every batch
                self._heap = True
            elif series == _RSS and self._heap:
                return []
            for step, value in zip(steps, values, strict=True):
                self._probe(series, step, value)
            return self.episodes.drain()
        total = _GPU_TOTAL.match(series)
        if total:
            if values:
                self._totals[total.group(1)] = values[-1]
            return []
        found: list[Finding] = []
        held = self._held.get(series)
        for step, value in zip(steps, values, strict=True):
            if held is not None and step != held[0]:
                found.extend(self._judge(series, *held))
            held = (step, value)  # a repeated step: the later sample wins, as in storage
        if held is not None:
            self._held[series] = held
        return found

    def _judge(self, series: str, step: int, value: float) -> list[Finding]:
        if value - value != 0.0:
            return []
        return self._spike(series, step, value) + self._leak(series, step, value)

    def _report_once(self, kind: str, series: str, active: bool) -> bool:
        key = (kind, series)
        if not active:
            self._flagged.discard(key)
            return False
        if key in self._flagged:
            return False
        self._flagged.add(key)
        return True

    def _spike(self, series: str, step: int, value: float) -> list[Finding]:
        baseline = self._baselines.get(series)
        if baseline is None:
            size = self.settings["spike_window"]
            baseline = self._baselines[series] = RobustBaseline(
                size, refresh=4, min_count=size // 2
            )
        gpu = series.split("/")[1] if series.startswith("system/gpu") else None
        capacity = self._totals.get(gpu, 0.0) * self.settings["capacity"] if gpu else 0.0
        jumped = baseline.ready and (
            value > (1 + self.settings["jump"]) * baseline.median
            and value - baseline.median > self.settings["min_mb"]
        )
        full = capacity > 0 and value > capacity
        baseline.push(value)
        if not self._report_once("memory_spike", series, jumped or full):
            return []
        reason = (
            f"above {self.settings['capacity']:.0%} of the GPU's memory"
            if full
            else f"{value / baseline.median:.2f}x its running median {baseline.median:.0f} MB"
        )
        return [
            finding(
                step,
                "memory_spike",
                "warning",
                series,
                f"{series} {value:.0f} MB at step {step}: {reason}",
                value=value,
                baseline=baseline.median,
                threshold=capacity if full else (1 + self.settings["jump"]) * baseline.median,
            )
        ]

    def _leak(self, series: str, step: int, value: float) -> list[Finding]:
        window = self.settings["window"]
        recent = self._recent.setdefault(series, deque(maxlen=window))
        recent.append((step, value))
        if len(recent) < window:
            return []
        ys = [v for _, v in recent]
        slope, r2 = _line(list(range(window)), ys) or (0.0, 0.0)  # over sample indices
        growth = slope * (window - 1)
        start = sum(ys) / window - slope * (window - 1) / 2
        leaking = (
            slope > 0
            and r2 >= self.settings["min_r2"]
            and growth > self.settings["min_growth"] * max(start, 1e-9)
            and growth > self.settings["min_mb"] / 4
        )
        if not self._report_once("memory_leak", series, leaking):
            return []
        first_step = recent[0][0]
        return [
            finding(
                step,
                "memory_leak",
                "warning",
                series,
                f"{series} grew steadily by {growth:.0f} MB over {window} samples"
                f" since step {first_step} (R^2 {r2:.2f})",
                value=value,
                baseline=start,
                threshold=self.settings["min_growth"],
            )
        ]

    def _probe(self, series: str, step: int, value: float) -> None:
        """Step-cadence readings: a steady climb over the last `probe_window` readings
        (a least-squares line over steps with R^2 >= `min_r2`) of at least `probe_min_mb`
        and `probe_min_mb_per_step` is a leak; every such reading extends the episode."""
        if value - value != 0.0:
            return
        window = self.settings["probe_window"]
        recent = self._probes.setdefault(series, deque(maxlen=window))
        recent.append((step, value))
        if len(recent) < window:
            return
        fit = _line([s for s, _ in recent], [v for _, v in recent])
        if fit is None:
            self.episodes.calm(series)
            return
        slope, r2 = fit
        growth = value - recent[0][1]
        if not (
            r2 >= self.settings["min_r2"]
            and growth >= self.settings["probe_min_mb"]
            and slope >= self.settings["probe_min_mb_per_step"]
        ):
            self.episodes.calm(series)
            return
        first = recent[0][0]
        what = (
            "process memory"
            if "rss" in series
            else "memory in use on the C heap (tensors, arrays)"
            if "heap" in series
            else "CUDA memory allocated"
        )
        self.episodes.hit(
            "memory_leak",
            series,
            step,
            lambda: finding(
                step,
                "memory_leak",
                "warning",
                series,
                f"{what} grew steadily from {recent[0][1]:.0f} to {value:.0f} MB between"
                f" steps {first} and {step} ({slope:.2f} MB a step, R^2 {r2:.2f})",
                value=value,
                baseline=recent[0][1],
                threshold=self.settings["probe_min_mb_per_step"],
                hint="something keeps references every step: tensors appended to a list"
                " (log loss.item() or loss.detach(), not loss), caches or lists that grow",
            ),
        )


def _line(xs: list[int], ys: list[float]) -> tuple[float, float] | None:
    """(slope, R^2) of the least-squares line through the points; None if xs do not vary."""
    count = len(xs)
    mean_x, mean_y = sum(xs) / count, sum(ys) / count
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - mean_y) ** 2 for y in ys)
    slope = sxy / sxx
    return slope, (sxy * sxy) / (sxx * syy) if syy > 0 else 0.0
