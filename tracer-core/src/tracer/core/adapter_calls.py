"""The calls framework adapters make on a run, beyond the seed API's log/step/watch/finish.

`TrainingTracer` derives from `AdapterCalls`; they live apart so the run's own module keeps
to the training loop's path. Adapters hand over what only the framework knows: its
data-parallel wrapper, the moment gradients are final, the moment the optimizer is about to
step (where `on_nonfinite="skip"` decides), a skipped optimizer step, run-level
totals, model saves, and, when they resume from a checkpoint older than the run's last step,
the abandoned history to drop (`rewind`) or a failed resume to undo (`end_untouched_resume`).
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from tracer.core.values import check_metrics
from tracer.records import Collected, EventWrite, RunRecord

if TYPE_CHECKING:
    from tracer.capture.collector import CollectorSet
    from tracer.core.model_saves import ModelSaves
    from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

ACTIVE = "active"  # the run's state while it records (see TrainingTracer.state)


class AdapterCalls:
    """The adapter-facing operations of a run; the attributes are `TrainingTracer`'s."""

    run_id: str
    storage: StorageBackend
    _state: str
    _pending: dict[str, Any]
    _step: int
    _start_step: int
    _last_closed_step: int
    _next_checkpoint: int
    _interval: int
    _resumed: Optional[RunRecord]
    _collectors: CollectorSet
    _saves: Optional[ModelSaves]  # None on a follower rank and when tracing is disabled

    @property
    def is_writer(self) -> bool:
        raise NotImplementedError

    def submit_background(self, source: Collected | Callable[[], Collected]) -> None:
        raise NotImplementedError

    def finish(
        self,
        status: str = "finished",
        error: Optional[str] = None,
        *,
        total_steps: Optional[int] = None,
    ) -> None:
        raise NotImplementedError

    def attach_data_parallel(self, ddp_model: Any) -> None:
        """For adapters that watch the unwrapped model: its `DistributedDataParallel` wrapper,
        so each rank's summary measures its own gradients before the all-reduce
        (`tracer.capture.gradients.ranks`). Call it after `watch()`, before the first backward."""
        if self._state != ACTIVE:
            return
        for collector in self._collectors:
            attach = getattr(collector, "attach_data_parallel", None)
            if attach is not None:
                attach(ddp_model)

    def capture_gradients(self) -> None:
        """For adapters: the gradients of this optimizer step are final (clipped, unscaled,
        synced); capture them now for models watched with a `capture_point`."""
        if self._state == ACTIVE:
            self._collectors.capture_now()

    def skip_nonfinite_step(self, optimizer: Any) -> bool:
        """For adapters, right before `optimizer` applies this step's gradients (after
        `capture_gradients()`), on every rank: with `on_nonfinite="skip"`, when a gradient is
        non-finite on any rank, clears every gradient of `optimizer` so its step changes
        nothing, records the skip and returns True (`tracer.capture.gradients.skipping`: the
        same decision the plain loop's optimizer hook takes). Costs one host sync and, in a
        distributed job, one scalar all-reduce; False and free in the default mode. Not for a
        step a GradScaler will judge: the scaler skips a non-finite step itself, and gradients
        cleared before its `unscale_` would make it fail."""
        if self._state != ACTIVE:
            return False
        for collector in self._collectors:  # not guarded: a decision that failed must not
            skip = getattr(collector, "skip_nonfinite_step", None)  # let one rank step alone
            if skip is not None:
                return bool(skip(optimizer))
        return False

    def record_skipped_optimizer_step(self) -> None:
        """For adapters: the optimizer skipped this step (fp16 overflow): recorded as
        `optimizer/skipped_step` and the event "optimizer_step_skipped", not captured."""
        if self._state == ACTIVE:
            self._collectors.optimizer_step_skipped()

    def log_summary(self, values: dict[str, Any]) -> None:
        """Run-level totals (a framework's end-of-training figures, final scores): stored as
        the event "summary" at the current step, not as series; `QueryEngine.get_run_summary`
        returns them merged under "summary"."""
        if self._state != ACTIVE:
            return
        numbers = check_metrics(dict(values))
        event: EventWrite = {
            "step": self._step,
            "kind": "summary",
            "data": {k: float(v) for k, v in numbers.items()},
        }
        self.submit_background(Collected([], [event]))

    def record_model_save(self, path: str, step: Optional[int] = None) -> None:
        """Note that a model checkpoint was saved to `path` (at `step`, default the current
        one), so queries can name the last healthy save before an anomaly. Call it once the
        files are written: with `pin_checkpoints=True` they are hard-linked here, before a
        framework's rotation may delete them (links only; no data is copied)."""
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise TypeError(f"record_model_save needs the checkpoint's path, got {path!r}")
        if step is not None:
            if isinstance(step, bool) or not hasattr(step, "__index__") or operator.index(step) < 0:
                raise ValueError(f"record_model_save: step must be an int >= 0, got {step!r}")
            step = operator.index(step)
        if self._state != ACTIVE:
            return
        saved = str(os.fspath(path))
        step = self._step if step is None else step
        event: EventWrite = {"step": step, "kind": "model_saved", "data": {"path": saved}}
        self.submit_background(Collected([], [event]))
        if self._saves is not None:
            self._saves.recorded(saved, step)

    def rewind(self, after_step: int) -> None:
        """Forget what this resumed run stored after `after_step`, and continue from there.

        For adapters resuming from a checkpoint earlier than the run's last step: the steps
        after it are trained again, and what was stored for them the first time belongs to
        an abandoned history. Call it right after the run starts, before logging. A backend
        that cannot rewind keeps those points, with a warning."""
        if self._state != ACTIVE or not self.is_writer:
            return
        if self._pending or self._last_closed_step >= self._start_step:
            logger.warning(
                "Tracer cannot rewind run %s to step %d: this process logged to it already.",
                self.run_id,
                after_step,
            )
            return
        try:
            self.storage.rewind_run(self.run_id, after_step)
        except NotImplementedError:
            logger.warning(
                "Tracer resumed run %s at step %d; its storage cannot drop what it stored after"
                " that step, which stays until trained again.",
                self.run_id,
                after_step,
            )
            return
        self._step = self._start_step = after_step
        self._last_closed_step = after_step - 1
        self._next_checkpoint = (after_step // self._interval + 1) * self._interval

    def end_untouched_resume(self) -> bool:
        """End a resumed run that nothing happened in (nothing logged, no step taken) as it
        was stored before, and return True; else do nothing and return False.

        For adapters whose resumed training fails before its first step (a checkpoint that
        does not fit the Trainer's settings): that failure is not the run's, and a finished
        run must not turn "failed" with a smaller step count."""
        before = getattr(self, "_resumed", None)
        if (
            before is None
            or self._state != ACTIVE
            or self._pending
            or self._step != self._start_step
            or self._last_closed_step >= self._start_step
            or self._collectors.holds_open_step()
        ):
            return False
        status = (
            before["status"] if before["status"] in ("finished", "failed", "killed") else "failed"
        )
        self.finish(status, error=before["error"], total_steps=before["total_steps"])
        return True
