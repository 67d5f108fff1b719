"""`tracer_accelerate.watch(accelerator, model, optimizer)`: gradient health for Accelerate loops.

Accelerate has trackers but no training events, so the watch takes them from the objects
`accelerator.prepare` returned. Call it on every rank, after `prepare` (and, on the main
process, after `init_trackers`):
- the prepared optimizer wraps a torch optimizer whose step pre-hook fires only for a real
  step (after accumulation: `accumulate()` skips the others; after GradScaler's unscale and
  DDP's all-reduce); there the run moves to step k (the k-th optimizer step, counted from 1,
  like `completed_steps` in Accelerate's examples) and captures the gradients, once;
- the prepared optimizer's `step` is wrapped to record a step Accelerate skipped
  (`step_was_skipped`: an fp16 overflow) as `optimizer/skipped_step`;
- `accelerator.end_training` is wrapped so that every rank finishes its part before
  Accelerate destroys the process group;
- a `halt_on` anomaly sets Accelerate's trigger: break when `accelerator.check_trigger()`.

On the main process the run is the `AccelerateTracker`'s (or the run of a plain
`tracer.init`); on other ranks a follower that only sends this rank's gradient summary.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import tracer
from tracer.config import TracerConfig
from tracer.core.tracer import TrainingTracer
from tracer_accelerate.tracker import TRACKER_NAME, AccelerateTracker

logger = logging.getLogger(__name__)

CAPTURE_POINT = "accelerate_optimizer_step"


def _tracer_tracker(accelerator: Any) -> Optional[AccelerateTracker]:
    """The AccelerateTracker this accelerator logs with (started on the main process only)."""
    for tracker in list(getattr(accelerator, "trackers", [])) + list(
        getattr(accelerator, "log_with", []) or []
    ):
        if isinstance(tracker, AccelerateTracker):
            return tracker
    return None


def _run_for(accelerator: Any, tracker: Optional[AccelerateTracker]) -> TrainingTracer:
    if accelerator.is_main_process:
        if tracker is not None and tracker in getattr(accelerator, "trackers", []):
            return tracker.ensure_run()
        current = tracer.get_run()
        if current is not None and current.active:
            return current
        raise RuntimeError(
            "tracer_accelerate.watch needs a run on the main process: pass"
            " log_with=[AccelerateTracker(...)] (or log_with='tracer') to the Accelerator and"
            " call accelerator.init_trackers(...) before watch(), or call tracer.init() first"
        )
    current = tracer.get_run()
    if current is not None and current.active:
        return current
    settings = dict(tracker.settings) if tracker is not None else {"project_name": TRACKER_NAME}
    return TrainingTracer(TracerConfig(**settings))  # a follower on this rank


class AccelerateWatch:
    """The hooks of one watched (model, optimizer) pair; `remove()` undoes them."""

    def __init__(self, accelerator: Any, model: Any, optimizer: Any) -> None:
        self.accelerator = accelerator
        self.tracker = _tracer_tracker(accelerator)
        self.run = _run_for(accelerator, self.tracker)
        self.optimizer = optimizer
        self.inner = getattr(optimizer, "optimizer", optimizer)
        self.completed = self.run.current_step  # optimizer steps done (0, or a resumed run's)
        self.skipped = 0
        self._owns_run = not self.run.is_writer  # a follower made here ends with the job
        if self.tracker is not None:
            self.tracker.optimizer_steps = lambda: self.completed
        self.run.watch(accelerator.unwrap_model(model), capture_point=CAPTURE_POINT)
        if model is not accelerator.unwrap_model(model):
            self.run.attach_data_parallel(model)
        self._handles = [
            self.inner.register_step_pre_hook(self._before_step),
            self.inner.register_step_post_hook(self._after_step),
        ]
        self._original_step = optimizer.step
        optimizer.step = self._step
        self._original_end = accelerator.end_training
        accelerator.end_training = self._end_training

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.run.active:
            self.run.log({}, step=self.completed + 1)
            self.run.capture_gradients()

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.completed += 1
        if self.run.should_stop:
            self.accelerator.set_trigger()

    def _step(self, *args: Any, **kwargs: Any) -> Any:
        result = self._original_step(*args, **kwargs)
        if self.accelerator.sync_gradients and getattr(self.optimizer, "step_was_skipped", False):
            self.skipped += 1
            if self.run.active:
                self.run.log({}, step=self.completed + 1)
                self.run.record_skipped_optimizer_step()
            self.completed += 1  # counted, as Accelerate's examples count completed steps
        return result

    def _end_training(self) -> None:
        """Every rank: end this rank's part, then Accelerate's end_training."""
        if self._owns_run:
            self.run.finish()
        self.remove()
        self.accelerator.end_training()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.optimizer.step == self._step:
            self.optimizer.step = self._original_step
        if self.accelerator.end_training == self._end_training:
            self.accelerator.end_training = self._original_end


def watch(accelerator: Any, model: Any, optimizer: Any) -> TrainingTracer:
    """Trace gradient health of a prepared `model` / `optimizer`; returns this rank's run."""
    return AccelerateWatch(accelerator, model, optimizer).run
