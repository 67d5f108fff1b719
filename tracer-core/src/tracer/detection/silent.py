"""Silent-bug detectors of a model that does not learn though it trains: the optimizer does
not update its parameters, or updates them with gradients never reset. Fed by the events of
the update probe (`capture/gradients/probe.py`) and the watch; their state follows only the
order of events, so online and offline agree. The detectors of what goes into the model are
in `silent_inputs.py`, those of the run's setup in `silent_setup.py`.

- `parameters_not_updated`: layers that have a gradient and sit in a param group, yet did
  not change at `samples` (3) probe samples in a row (every `update_check_interval` steps).
  All of them: critical (the run cannot learn: an lr of 0, a warmup scheduler never stepped,
  an epoch scheduler stepped per batch); some: warning.
- `parameters_outside_optimizer`: parameters with a gradient in no param group that did not
  move between two samples (one that moved has another optimizer). None of the watched ones
  in the optimizer: critical (an optimizer built for another copy of the model); some (a
  head left out): warning.
- `frozen_model`: weight matrices exist but none is trainable, only 1-D tensors (norms,
  biases) are: a `requires_grad` filter that froze too much. Critical.
- `gradients_not_reset`: at `samples` (2) samples in a row, the gradient accumulated by the
  first backward after an optimizer step was not that backward's own gradient
  (`capture/gradients/resets.py`): `zero_grad()` is never called. Critical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from tracer.detection.base import Detector, Finding, finding
from tracer.records import EventWrite

UPDATE_EVENT = "optimizer_update"


def layer_names(layers: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{name}`" for name in layers[:limit])
    return shown + (f" and {len(layers) - limit} more" if len(layers) > limit else "")


def _lrs(data: Mapping[str, Any]) -> str:
    lrs = cast(list[float], data.get("lrs", []))
    return ", ".join(f"{lr:.3g}" for lr in lrs) or "?"


class ParametersNotUpdatedDetector(Detector):
    name = "parameters_not_updated"
    anomaly_types = ("parameters_not_updated",)
    defaults = {"samples": 3}
    minimums = {"samples": 1}

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
        plural = "s" if len(stuck) > 1 else ""
        what = "no parameter" if whole else f"layer{plural} {layer_names(stuck)}"
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
                f"{layer_names(outside)} of {subject} get gradients but are in no param group of"
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


class UpdateStreakDetector(Detector):
    """A detector of one streak, in probe samples, that the "optimizer_update" event carries
    under `streak_key`: it reports (`report`) while the streak has reached `samples` and
    `evidence` allows, and calms the model's episode otherwise."""

    streak_key = ""
    minimums = {"samples": 1}

    def observe_event(self, event: EventWrite) -> list[Finding]:
        if event["kind"] != UPDATE_EVENT:
            return []
        data = event["data"]
        subject = str(data.get("model", ""))
        streak = int(cast(int, data.get(self.streak_key, 0)))
        if streak < self.settings["samples"] or not self.evidence(data):
            self.episodes.calm(subject)
        else:
            every = int(cast(int, data.get("interval", 1)))
            self.report(event["step"], data, subject, streak, every)
        return self.episodes.drain()

    def evidence(self, data: Mapping[str, Any]) -> bool:
        """Whether what else the event says supports a report (by default, nothing needed)."""
        return True

    def report(
        self, step: int, data: Mapping[str, Any], subject: str, streak: int, every: int
    ) -> None:
        raise NotImplementedError


class GradientsNotResetDetector(UpdateStreakDetector):
    name = "gradients_not_reset"
    anomaly_types = ("gradients_not_reset",)
    defaults = {"samples": 2}
    streak_key = "not_reset_streak"

    def report(
        self, step: int, data: Mapping[str, Any], subject: str, streak: int, every: int
    ) -> None:
        gap = data.get("reset_gap")
        held = f" (it held {float(cast(float, gap)):.3g}x the new gradient besides)" if gap else ""
        self.episodes.hit(
            "gradients_not_reset",
            subject,
            step,
            lambda: finding(
                step,
                "gradients_not_reset",
                "critical",
                subject,
                f"the gradients of {subject} were not reset after the optimizer step at the"
                f" last {streak} samples (one step in {every}): each backward adds to the"
                f" gradients of all the steps before{held}",
                hint="call optimizer.zero_grad() after each optimizer.step() (with"
                " accumulation: after the step that ends each accumulation)",
            ),
            "critical",
        )
