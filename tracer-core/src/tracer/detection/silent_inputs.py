"""Silent-bug detectors of what goes into the model: its train()/eval() mode while the optimizer
steps and while it is evaluated, and the batches it is fed. Fed by the probe's events
(`capture/gradients/probe.py`, `evaluation.py`); their state follows only the order of events,
so online and offline agree.

- `training_mode`: the model in eval() mode at `samples` - 1 (2) samples in a row while the
  optimizer steps ("eval_mode_training"); an evaluation forward in train() mode
  ("evaluation_in_train_mode"), only for models holding dropout or batch norm; a functional
  dropout left on during an evaluation in eval() mode ("dropout_in_eval"). Warning.
- `repeated_batch`: the same batch fingerprint at `samples` + 1 (3) samples in a row while a
  live DataLoader holds more than one batch (of the batch's size, when it has one). Without
  such a loader a repeated batch is full-batch training, the whole dataset at each step, and
  is not reported. Warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, cast

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.silent import UPDATE_EVENT, UpdateStreakDetector
from tracer.records import EventWrite


def _loader_with_more(data: Mapping[str, Any]) -> Optional[dict[str, int]]:
    """The live loader, named in the event, that has more than the one batch seen: more than
    one batch, and batches of the repeated batch's rows (unless either size is unknown)."""
    rows = int(cast(int, data.get("batch_rows", 0)))
    for loader in cast(list[dict[str, int]], data.get("loaders", [])):
        size = int(loader.get("batch_size", 0))
        if int(loader.get("batches", 0)) > 1 and (not size or not rows or size == rows):
            return loader
    return None


class TrainingModeDetector(Detector):
    name = "training_mode"
    anomaly_types = ("eval_mode_training", "evaluation_in_train_mode", "dropout_in_eval")
    defaults = {"samples": 2}
    minimums = {"samples": 1}

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
        if event["kind"] == "dropout_in_eval":
            function = str(data.get("function", "dropout"))
            self.episodes.hit(
                "dropout_in_eval",
                subject,
                step,
                finding(
                    step,
                    "dropout_in_eval",
                    "warning",
                    subject,
                    f"F.{function} ran with training=True while {subject} was in eval() mode:"
                    " evaluation and inference outputs are randomly masked (the functional"
                    " dropout's `training` argument defaults to True; eval() does not change"
                    " it)",
                    hint="pass training=self.training to F.dropout, or use nn.Dropout modules"
                    " (Monte Carlo dropout on purpose: detectors={'training_mode': False})",
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


class RepeatedBatchDetector(UpdateStreakDetector):
    name = "repeated_batch"
    anomaly_types = ("repeated_batch",)
    defaults = {"samples": 2}
    streak_key = "repeated_batch_streak"

    def evidence(self, data: Mapping[str, Any]) -> bool:
        return _loader_with_more(data) is not None

    def report(
        self, step: int, data: Mapping[str, Any], subject: str, streak: int, every: int
    ) -> None:
        batches = cast(dict[str, int], _loader_with_more(data))["batches"]
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
                f" optimizer step in {every}) while a DataLoader of {batches} batches is"
                " there: the loop repeats one batch of it",
                hint="iterate the DataLoader (for batch in loader), do not call"
                " next(iter(loader)) at each step: a new iterator starts again at the first"
                " batch; check the sampler. Overfitting one batch on purpose:"
                " detectors={'repeated_batch': False}",
            ),
        )
