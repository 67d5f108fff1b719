"""`rank_divergence`: one rank of a distributed job whose gradients differ from the others'.

Input: the per-rank series `rank/<r>/grad_norm` that rank 0 stores
(`tracer.capture.gradients.ranks`) and the "rank_summaries" event saying the world size and
what the norm measures. A step is judged once every rank's value for it has arrived, whatever
order the series come in.

- Non-finite: some ranks' norms are NaN/Inf while others are finite. Critical, once per
  episode and rank. With norms measured before the all-reduce (DDP), this names the rank
  whose batch or forward went bad, before the all-reduce spreads the NaN to every rank.
- Drift, norms before the all-reduce: they differ by batch, so a rank is reported when its
  norm stays more than `drift_factor` times above the median of the other ranks for
  `patience` captured steps in a row (above only: with two ranks, the one far below is
  the healthy one).
- Drift, synchronised norms (after the all-reduce): every rank must hold the same gradients,
  so a relative difference above `sync_tolerance` from the others' median is reported at
  once: the ranks' gradients are out of sync (a silent data corruption, a missed all-reduce).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.records import EventWrite

_SERIES = re.compile(r"rank/(\d+)/grad_norm")


class RankDivergenceDetector(Detector):
    name = "rank_divergence"
    anomaly_types = ("rank_divergence",)
    defaults = {"drift_factor": 10.0, "patience": 3, "sync_tolerance": 1e-3}

    def setup(self) -> None:
        self._world_size = 0
        self._synchronized = True
        self._pending: dict[int, dict[int, float]] = {}
        self._nonfinite: set[int] = set()  # ranks in a non-finite episode
        self._drifting: dict[int, int] = {}  # rank -> consecutive drifting steps

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "rank_summaries":
            return []
        self._world_size = int(event["data"].get("world_size", 0))
        self._synchronized = event["data"].get("grad_norm") != "local"
        return self._judge_complete()

    def wants(self, series: str) -> bool:
        return _SERIES.fullmatch(series) is not None

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        match = _SERIES.fullmatch(series)
        if match is None:
            return []
        rank = int(match.group(1))
        for step, value in zip(steps, values, strict=True):
            self._pending.setdefault(step, {})[rank] = value
        return self._judge_complete()

    def _judge_complete(self) -> list[Finding]:
        if self._world_size < 2:
            return []
        complete = sorted(
            s for s, by_rank in self._pending.items() if len(by_rank) >= self._world_size
        )
        found: list[Finding] = []
        for step in complete:
            found.extend(self._judge(step, self._pending.pop(step)))
        return found

    def _judge(self, step: int, norms: dict[int, float]) -> list[Finding]:
        bad = sorted(r for r, v in norms.items() if not math.isfinite(v))
        good = sorted(r for r in norms if r not in bad)
        found: list[Finding] = []
        for rank in good:
            self._nonfinite.discard(rank)
        if bad and good:
            for rank in bad:
                if rank in self._nonfinite:
                    continue
                self._nonfinite.add(rank)
                found.append(
                    finding(
                        step,
                        "rank_divergence",
                        "critical",
                        f"rank/{rank}",
                        f"rank {rank}'s gradients are non-finite ({norms[rank]}) at step {step}"
                        f" while rank(s) {', '.join(map(str, good))} are finite",
                        value=norms[rank],
                    )
                )
        elif bad:  # every rank non-finite: nan_or_inf's case, not a divergence
            self._nonfinite.update(bad)
        if len(good) >= 2:
            found.extend(self._drift(step, {r: norms[r] for r in good}))
        return found

    def _drift(self, step: int, norms: dict[int, float]) -> list[Finding]:
        found: list[Finding] = []
        for rank, value in norms.items():
            median = statistics.median(v for r, v in norms.items() if r != rank)
            if self._synchronized:
                limit = self.settings["sync_tolerance"] * max(abs(median), 1e-12)
                off = abs(value - median) > limit
                needed = 1
            else:
                factor = self.settings["drift_factor"]
                off = median > 0 and value > factor * median
                limit = factor * median
                needed = int(self.settings["patience"])
            count = self._drifting.get(rank, 0) + 1 if off else 0
            self._drifting[rank] = count
            if count != needed:
                continue
            what = "synchronised gradient norm" if self._synchronized else "gradient norm"
            found.append(
                finding(
                    step,
                    "rank_divergence",
                    "warning",
                    f"rank/{rank}",
                    f"rank {rank}'s {what} {value:.4g} drifts from the other ranks' median"
                    f" {median:.4g} (for {count} captured step(s) up to step {step})",
                    value=value,
                    baseline=median,
                    threshold=limit,
                )
            )
        return found
