"""Silent-bug detectors fed by events: what the update probe (`capture/gradients/probe.py`),
the watch and the warning capture record. A silent bug trains without crashing or producing
NaN, so these judge invariants of a training step rather than the shape of a curve.

- `parameters_not_updated`: layers that have a gradient and sit in a param group, yet did
  not change at `samples` (3) probe samples in a row (every `update_check_interval` steps).
  All of them: critical (the run cannot learn: an lr of 0, a warmup scheduler never stepped,
  an epoch scheduler stepped per batch); some: warning.
- `parameters_outside_optimizer`: parameters with a gradient in no param group. None of the
  watched ones in the optimizer: critical (an optimizer built for another copy of the
  model); some (a head left out): warning.
- `frozen_model`: weight matrices exist but none is trainable, only 1-D tensors (norms,
  biases) are: a `requires_grad` filter that froze too much. Critical.
- `training_mode`: the model in eval() mode at `samples` - 1 (2) samples in a row while the
  optimizer steps ("eval_mode_training"), or a forward with gradients disabled in train()
  mode ("evaluation_in_train_mode"); only for models holding dropout or batch norm. Warning.
- `repeated_batch`: the same batch fingerprint at `samples` (3) samples in a row. Warning.
- `training_warning`: a recorded warning that signals a silent bug (a loss whose target
  broadcasts). Warning.
Their state follows only the order of events, so online and offline agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from tracer.detection.base import Detector, Finding, finding
from tracer.records import EventWrite

UPDATE_EVENT = "optimizer_update"


def _names(layers: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{name}`" for name in layers[:limit])
    return shown + (f" and {len(layers) - limit} more" if len(layers) > limit else "")


def _lrs(data: Mapping[str, Any]) -> str:
    lrs = cast(list[float], data.get("lrs", []))
    return ", ".join(f"{lr:.3g}" for lr in lrs) or "?"


class ParametersNotUpdatedDetector(Detector):
    name = "parameters_not_updated"
    anomaly_types = ("parameters_not_updated",)
    defaults = {"samples": 3}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != UPDATE_EVENT:
            return []
        data = event["data"]
        streaks = cast(dict[str, int], data.get("unchanged", {}))
        stuck = [name for name, streak in streaks.items() if streak >= self.settings["samples"]]
        subject = str(data.get("model", ""))
        if not stuck:
            self.episodes.calm(subject)
            return self.episodes.drain()
        step = event["step"]
        every = int(cast(int, data.get("interval", 1)))
        samples = min(streaks[name] for name in stuck)
        whole = len(stuck) >= int(cast(int, data.get("in_optimizer", 0)))
        severity = "critical" if whole else "warning"
        what = "no parameter" if whole else f"layer{'s' if len(stuck) > 1 else ''} {_names(stuck)}"
        message = (
            f"{what} of {subject} changed at the last {samples} optimizer steps sampled (one"
            f" in {every}) though {'they have' if whole else 'it has'} gradients; param group"
            f" lr: {_lrs(data)}"
        )
        hint = (
            "an lr of 0 or nearly: is the scheduler stepped (a warmup never stepped stays at"
            " 0), and stepped per epoch, not per batch? Do these parameters reach"
            " optimizer.step() (the optimizer of this model, not of a copy)?"
        )
        self.episodes.hit(
            "parameters_not_updated",
            subject,
            step,
            lambda: finding(
                step,
                "parameters_not_updated",
                severity,
                subject,
                message,
                value=0.0,
                threshold=0.0,
                hint=hint,
            ),
            severity,
        )
        return self.episodes.drain()


class ParametersOutsideOptimizerDetector(Detector):
    name = "parameters_outside_optimizer"
    anomaly_types = ("parameters_outside_optimizer",)
    defaults = {}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != UPDATE_EVENT:
            return []
        data = event["data"]
        outside = cast(list[str], data.get("outside_optimizer", []))
        subject = str(data.get("model", ""))
        if not outside:
            self.episodes.calm(subject)
            return self.episodes.drain()
        step = event["step"]
        none_inside = int(cast(int, data.get("in_optimizer", 0))) == 0
        if none_inside:
            severity = "critical"
            message = (
                f"none of the {len(outside)} parameters of {subject} that get gradients is in"
                " the optimizer: it never updates this model"
            )
            hint = (
                "build the optimizer from this model's parameters (after moving or wrapping"
                " it, not from a copy: deepcopy, a model re-created, an EMA copy)"
            )
        else:
            severity = "warning"
            message = (
                f"{_names(outside)} of {subject} get gradients but are in no param group of"
                " the optimizer: they never learn"
            )
            hint = (
                "add them to the optimizer (a head created after the optimizer, or a param"
                " group filter that left them out); if frozen on purpose, set"
                " requires_grad=False"
            )
        self.episodes.hit(
            "parameters_outside_optimizer",
            subject,
            step,
            lambda: finding(
                step, "parameters_outside_optimizer", severity, subject, message, hint=hint
            ),
            severity,
        )
        return self.episodes.drain()


class FrozenModelDetector(Detector):
    name = "frozen_model"
    anomaly_types = ("frozen_model",)
    defaults = {}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != "gradient_capture":
            return []
        data = event["data"]
        frozen = int(cast(int, data.get("frozen_matrices", 0)))
        trainable = int(cast(int, data.get("trainable_matrices", 0)))
        vectors = int(cast(int, data.get("trainable_vectors", 0)))
        if trainable or not frozen or not vectors:
            return []
        subject = str(data.get("model", ""))
        step = event["step"]
        self.episodes.hit(
            "frozen_model",
            subject,
            step,
            finding(
                step,
                "frozen_model",
                "critical",
                subject,
                f"none of the {frozen} weight matrices of {subject} is trainable; only"
                f" {vectors} one-dimensional tensors (norms, biases) are: it can barely learn",
                value=0.0,
                hint="check the requires_grad filter: it froze the layers that should train"
                " (the head?) as well",
            ),
        )
        self.episodes.close_all()
        return self.episodes.drain()


class TrainingModeDetector(Detector):
    name = "training_mode"
    anomaly_types = ("eval_mode_training", "evaluation_in_train_mode")
    defaults = {"samples": 2}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        step = event["step"]
        data = event["data"]
        subject = str(data.get("model", ""))
        if event["kind"] == "evaluation_in_train_mode":
            self.episodes.hit(
                "evaluation_in_train_mode",
                subject,
                step,
                finding(
                    step,
                    "evaluation_in_train_mode",
                    "warning",
                    subject,
                    f"{subject} ran a forward pass with gradients off in train() mode:"
                    " dropout and batch norm behave as in training (and batch norm's running"
                    " statistics change) during an evaluation",
                    hint="call model.eval() before evaluating and model.train() after",
                ),
            )
            self.episodes.close_all()
            return self.episodes.drain()
        if event["kind"] != UPDATE_EVENT:
            return []
        streak = int(cast(int, data.get("eval_streak", 0)))
        if streak < self.settings["samples"]:
            self.episodes.calm(subject)
            return self.episodes.drain()
        self.episodes.hit(
            "eval_mode_training",
            subject,
            step,
            lambda: finding(
                step,
                "eval_mode_training",
                "warning",
                subject,
                f"{subject} is in eval() mode while the optimizer steps ({streak} samples in a"
                " row): dropout is off and batch norm uses its running statistics in training",
                hint="call model.train() after each evaluation (if training in eval mode is"
                " on purpose, disable this detector: detectors={'training_mode': False})",
            ),
        )
        return self.episodes.drain()


class RepeatedBatchDetector(Detector):
    name = "repeated_batch"
    enabled_by_default = False  # opt-in until proven beyond the silent-bug benchmark (README)
    anomaly_types = ("repeated_batch",)
    defaults = {"samples": 2}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != UPDATE_EVENT:
            return []
        data = event["data"]
        subject = str(data.get("model", ""))
        streak = int(cast(int, data.get("repeated_batch_streak", 0)))
        if streak < self.settings["samples"]:
            self.episodes.calm(subject)
            return self.episodes.drain()
        step = event["step"]
        every = int(cast(int, data.get("interval", 1)))
        self.episodes.hit(
            "repeated_batch",
            subject,
            step,
            lambda: finding(
                step,
                "repeated_batch",
                "warning",
                subject,
                f"{subject} saw the same input batch at {streak + 1} samples in a row (one"
                f" optimizer step in {every}): the data loader repeats one batch",
                hint="create the DataLoader iterator once per epoch (not next(iter(loader))"
                " at every step) and check the sampler; if training on one batch is on"
                " purpose, disable: detectors={'repeated_batch': False}",
            ),
        )
        return self.episodes.drain()


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
                f"{_names(large)} of {subject}: weights at {top:.3g}x the scale of torch's"
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
    enabled_by_default = False  # opt-in until proven beyond the silent-bug benchmark (README)
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
