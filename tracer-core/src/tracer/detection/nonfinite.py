"""`nan_or_inf`: the first non-finite value of any metric, and the first non-finite gradient.

Metrics the user logs are checked value by value; non-finite values less than `cooldown`
(50) finite values apart are one episode, however long it lasts. The per-rank series of a
distributed job (`rank/<r>/grad_norm`) are checked the same way, so a rank whose own
gradients went non-finite is named. Gradients are judged from
the "nonfinite_gradients" events of the capture (one per captured step with non-finite
gradients; the steps in between were finite): an episode names the first non-finite layer
of its first step in parameter order, the most useful fact in a divergence post-mortem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.episodes import Episodes
from tracer.detection.stats import all_finite
from tracer.records import EventWrite


class NanOrInfDetector(Detector):
    name = "nan_or_inf"
    anomaly_types = ("nan_or_inf",)
    defaults = {"cooldown": 50}

    def setup(self) -> None:
        self.episodes = Episodes(self.settings["cooldown"])
        self._last_gradient_event: dict[str, tuple[int, str]] = {}  # model: (step, subject)

    def wants(self, series: str) -> bool:
        return self.context.is_user_metric(series)

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        episodes = self.episodes
        if values and all_finite(values):  # the usual case, at C speed
            episodes.calm(series, len(values))
            return []
        for step, value in zip(steps, values, strict=True):
            if value - value == 0.0:  # finite (NaN and +-Inf give NaN)
                episodes.calm(series)
            else:
                episodes.hit("nan_or_inf", series, step, partial(_report, series, step, value))
        return episodes.drain()

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "nonfinite_gradients":
            return []
        data = event["data"]
        layers = data.get("layers", [])
        first = data.get("first_layer", layers[0] if layers else "")
        model = (
            first.split(".", 1)[0] if re.match(r"m\d+\.", first) else ""
        )  # m1., m2.: more models
        step = event["step"]
        previous = self._last_gradient_event.get(model)
        subject = first
        if previous is not None and self.episodes.is_open("nan_or_inf", previous[1]):
            # captures in between were finite: calm observations of the open episode
            self.episodes.calm(previous[1], max(0, step - previous[0] - 1))
            if self.episodes.is_open("nan_or_inf", previous[1]):
                subject = previous[1]  # one episode keeps the layer it started with
        self._last_gradient_event[model] = (step, subject)
        self.episodes.hit(
            "nan_or_inf",
            subject,
            step,
            lambda: finding(
                step,
                "nan_or_inf",
                "critical",
                subject,
                f"non-finite gradient in {len(layers)} layer(s) at step {step}, first {first}",
                value=float("nan"),
                hint=f"look at layer {first} and the batch of step {step}; lower the lr or clip"
                " gradients; under fp16 use a GradScaler or bf16",
            ),
        )
        return self.episodes.drain()


_RANK_NORM = re.compile(r"rank/(\d+)/grad_norm")


def _describe(series: str, value: float, step: int) -> str:
    rank = _RANK_NORM.fullmatch(series)
    if rank is not None:
        return f"rank {rank.group(1)}'s gradient norm is {value} at step {step} ({series})"
    return f"{series} is {value} at step {step}"


def _report(series: str, step: int, value: float) -> Finding:
    return finding(
        step,
        "nan_or_inf",
        "critical",
        series,
        _describe(series, value, step),
        value=value,
        hint=_hint(series, step),
    )


def _hint(series: str, step: int) -> str:
    if _RANK_NORM.fullmatch(series):
        return f"look at that rank's batch of step {step} and its device"
    return (
        f"look at the batch of step {step} (its samples are stored) and at the layer the"
        " gradient report names; lower the lr or clip gradients"
    )
