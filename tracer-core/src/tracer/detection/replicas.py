"""`replica_divergence`: the ranks of a data-parallel job hold different weights.

Input: the series `rank/<r>/weight_fingerprint` (and `rank/<r>/m<i>.weight_fingerprint` for
the i-th watched model) that rank 0 stores every `rank_weight_check_interval` steps
(`tracer.capture.gradients.replicas`), and the "rank_summaries" event saying the world size.
In healthy DDP the replicas are bitwise identical at every step, so any difference beyond
float noise (`tolerance`, relative) means they diverged: the forward bypassed the DDP wrapper
(`ddp_model.module(x)`: no gradient all-reduce), a rank loaded another checkpoint, or one rank
changed a parameter alone. Each rank then trains its own model, and every rank's gradient
norm still looks healthy, so nothing else notices. Critical: the run's result is one of
several different models.

A step is judged once every rank's fingerprint for it has arrived (the world size known),
whatever order the series come in; at the run's end, the steps with the fingerprints of at
least two ranks (a rank lost on the way). One episode per model while its checks keep
differing; a check where every rank agrees again closes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.records import EventWrite

_SERIES = re.compile(r"rank/(\d+)/((?:m\d+\.)?)weight_fingerprint")

HINT = (
    "call the DDP-wrapped model (ddp_model(x), not ddp_model.module(x)) for every training"
    " forward; every rank must load the same checkpoint (load it before wrapping the model in"
    " DDP, which broadcasts rank 0's weights, or on every rank); change parameters on every"
    " rank alike. Resume from a checkpoint saved before the divergence"
)


def relative_difference(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude; inf when exactly one is non-finite."""
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


class ReplicaDivergenceDetector(Detector):
    name = "replica_divergence"
    anomaly_types = ("replica_divergence",)
    defaults = {"tolerance": 1e-5}

    def setup(self) -> None:
        self._world_size = 0
        self._first_step: dict[str, int] = {}  # model prefix -> its first judged step
        # (model prefix, step) -> rank -> fingerprint
        self._pending: dict[tuple[str, int], dict[int, float]] = {}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "rank_summaries":
            return []
        self._world_size = int(event["data"].get("world_size", 0))
        return self._judge_complete()

    def wants(self, series: str) -> bool:
        return _SERIES.fullmatch(series) is not None

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        match = _SERIES.fullmatch(series)
        if match is None:
            return []
        rank, prefix = int(match.group(1)), match.group(2)
        for step, value in zip(steps, values, strict=True):
            self._pending.setdefault((prefix, int(step)), {})[rank] = float(value)
        return self._judge_complete()

    def finish(self) -> list[Finding]:
        for key in sorted(self._pending, key=lambda k: (k[1], k[0])):
            by_rank = self._pending.pop(key)
            if len(by_rank) >= 2:
                self._judge(key[0], key[1], by_rank)
        return super().finish()

    def _judge_complete(self) -> list[Finding]:
        if self._world_size < 2:
            return []
        complete = sorted(
            (key for key, by_rank in self._pending.items() if len(by_rank) >= self._world_size),
            key=lambda k: (k[1], k[0]),
        )
        for prefix, step in complete:
            self._judge(prefix, step, self._pending.pop((prefix, step)))
        return self.episodes.drain()

    def _judge(self, prefix: str, step: int, by_rank: dict[int, float]) -> None:
        """One check of one model: every rank against the lowest rank present (rank 0)."""
        subject = f"{prefix}weight_fingerprint"
        first = self._first_step.setdefault(prefix, step) == step
        ranks = sorted(by_rank)
        reference = ranks[0]
        tolerance = float(self.settings["tolerance"])
        values = {rank: by_rank[rank] for rank in ranks}
        if all(not math.isfinite(v) for v in values.values()):
            self.episodes.calm(subject)  # every rank non-finite: nan_or_inf's case
            return
        differences = {
            rank: relative_difference(values[rank], values[reference]) for rank in ranks[1:]
        }
        apart = [rank for rank, difference in differences.items() if difference > tolerance]
        if not apart:
            self.episodes.calm(subject)
            return
        largest = max(differences[rank] for rank in apart)

        def make() -> Finding:
            agree = [reference] + [r for r in ranks[1:] if r not in apart]
            if len(ranks) == 2:
                who = f"ranks {reference} and {apart[0]}"
            else:
                who = (
                    f"rank(s) {', '.join(map(str, apart))} and rank(s) {', '.join(map(str, agree))}"
                )
            model = f" of model {prefix.rstrip('.')}" if prefix else ""
            when = (
                " (at the first check: the ranks started from different weights)" if first else ""
            )
            return finding(
                step,
                "replica_divergence",
                "critical",
                subject,
                f"the weights{model} of {who} differ at step {step}{when}: the replicas"
                " diverged, each rank trains its own model",
                value=largest,
                baseline=values[reference],
                threshold=tolerance,
                hint=HINT,
            )

        self.episodes.hit("replica_divergence", subject, step, make, "critical")
