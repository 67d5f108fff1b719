"""Silent-bug detectors of how a run is set up, each judged once from what is known before
or as it starts: the init scale of the weights, weight decay on normalisation layers, and the
Python warnings that name a silent bug. Fed by events (`capture/gradients/model_survey.py`,
the probe, `capture/warnings.py`), so online and offline agree.

- `weight_scale`: a Linear or convolution weight whose rms x sqrt(fan_in) is above
  `max_scale` (5; torch's default init gives ~0.6). Warning.
- `norm_weight_decay`: normalisation layers' parameters in a param group with weight decay
  of at least `min_decay` (0.05; torch AdamW's default 0.01 on everything is not reported).
  Warning.
- `training_warning`: a recorded warning that signals a silent bug (a loss whose target
  broadcasts, a scheduler stepped before the optimizer). Warning.
"""

from __future__ import annotations

from typing import cast

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.silent import layer_names
from tracer.records import EventWrite


class TrainingWarningDetector(Detector):
    name = "training_warning"
    anomaly_types = ("training_warning",)
    defaults = {}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "training_warning":
            return []
        data = event["data"]
        bug = str(data.get("bug", ""))
        step = event["step"]
        hints = {
            "loss_broadcast": "the loss's input and target shapes differ and broadcast (e.g."
            " [B, 1] against [B]): reshape the target (target.view_as(output))",
            "scheduler_order": "call optimizer.step() before scheduler.step()",
        }
        self.episodes.hit(
            "training_warning",
            bug,
            step,
            finding(
                step,
                "training_warning",
                "warning",
                bug,
                f"warning at {data.get('where', '?')}: {data.get('message', '')}",
                hint=hints.get(bug, ""),
            ),
        )
        self.episodes.close_all()
        return self.episodes.drain()


class WeightScaleDetector(Detector):
    name = "weight_scale"
    anomaly_types = ("weight_scale",)
    defaults = {"max_scale": 5.0}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "weight_scale":
            return []
        data = event["data"]
        limit = float(self.settings["max_scale"])
        scales = cast(dict[str, float], data.get("layers", {}))
        large = sorted((n for n, v in scales.items() if v > limit), key=lambda n: -scales[n])
        if not large:
            return []
        subject = str(data.get("model", ""))
        step = event["step"]
        top = scales[large[0]]
        self.episodes.hit(
            "weight_scale",
            subject,
            step,
            finding(
                step,
                "weight_scale",
                "warning",
                subject,
                f"{layer_names(large)} of {subject}: weights at {top:.3g}x the scale of torch's"
                " default init by fan-in (rms x sqrt(fan_in); ~0.6 at default init, ~1-2 in"
                " trained transformers): activations and gradients start far off",
                value=top,
                threshold=limit,
                hint="check the init (std of normal_/uniform_ against 1/sqrt(fan_in)) or a"
                " weight scaling applied twice",
            ),
        )
        self.episodes.close_all()
        return self.episodes.drain()


class NormWeightDecayDetector(Detector):
    name = "norm_weight_decay"
    anomaly_types = ("norm_weight_decay",)
    defaults = {"min_decay": 0.05}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "norm_weight_decay":
            return []
        data = event["data"]
        decay = float(cast(float, data.get("weight_decay", 0.0)))
        subject = str(data.get("model", ""))
        if decay < self.settings["min_decay"]:
            return []
        step = event["step"]
        self.episodes.hit(
            "norm_weight_decay",
            subject,
            step,
            finding(
                step,
                "norm_weight_decay",
                "warning",
                subject,
                f"the normalisation layers of {subject} are in a param group with weight"
                f" decay {decay:g} ({data.get('optimizer', '')}): their scales are pulled"
                " towards 0",
                value=decay,
                threshold=self.settings["min_decay"],
                hint="put norms and biases (p.ndim < 2) in a param group with weight_decay=0.0",
            ),
        )
        self.episodes.close_all()
        return self.episodes.drain()
