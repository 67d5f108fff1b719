"""`nan_or_inf`: the first non-finite value of any metric, and the first non-finite gradient.

Metrics the user logs are checked value by value; a series reports again only after it was
finite in between (one anomaly per episode, not one per step). The per-rank series of a
distributed job (`rank/<r>/grad_norm`) are checked the same way, so a rank whose own
gradients went non-finite is named. Gradients are judged from
the "nonfinite_gradients" events of the capture: an episode starts at an event whose step
does not follow the previous event's, and names the first non-finite layer in parameter
order, the most useful fact in a divergence post-mortem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.stats import all_finite
from tracer.storage.base import EventWrite


class NanOrInfDetector(Detector):
    name = "nan_or_inf"
    anomaly_types = ("nan_or_inf",)
    defaults = {}

    def setup(self) -> None:
        self._in_episode: dict[str, bool] = {}
        self._last_gradient_event: dict[str, int] = {}

    def wants(self, series: str) -> bool:
        return self.context.is_user_metric(series)

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        if values and all_finite(values):  # the usual case, at C speed
            self._in_episode[series] = False
            return []
        found = []
        in_episode = self._in_episode.get(series, False)
        for step, value in zip(steps, values, strict=True):
            if value - value == 0.0:  # finite (NaN and +-Inf give NaN)
                in_episode = False
            elif not in_episode:
                in_episode = True
                found.append(
                    finding(
                        step,
                        "nan_or_inf",
                        "critical",
                        series,
                        _describe(series, value, step),
                        value=value,
                    )
                )
        self._in_episode[series] = in_episode
        return found

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "nonfinite_gradients":
            return []
        data = event["data"]
        layers = data.get("layers", [])
        first = data.get("first_layer", layers[0] if layers else "")
        model = (
            first.split(".", 1)[0] if re.match(r"m\d+\.", first) else ""
        )  # m1., m2.: more models
        previous = self._last_gradient_event.get(model)
        self._last_gradient_event[model] = event["step"]
        if previous is not None and event["step"] == previous + 1:
            return []
        return [
            finding(
                event["step"],
                "nan_or_inf",
                "critical",
                first,
                f"non-finite gradient in {len(layers)} layer(s) at step"
                f" {event['step']}, first {first}",
                value=float("nan"),
            )
        ]


_RANK_NORM = re.compile(r"rank/(\d+)/grad_norm")


def _describe(series: str, value: float, step: int) -> str:
    rank = _RANK_NORM.fullmatch(series)
    if rank is not None:
        return f"rank {rank.group(1)}'s gradient norm is {value} at step {step} ({series})"
    return f"{series} is {value} at step {step}"
