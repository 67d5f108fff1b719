"""`TrainingTracer`: one training run, from `init` to `finish`.

`log()` and `step()` are the per-step path: a few type checks and an append to the writer's
queue, never a disk write, a lock or a host sync. Everything else (storage, hooks, signals)
happens at start and end. Use it through `tracer.init()`, or directly, for several runs in one
process, and as a context manager that marks the run failed when its block raises.

Distributed jobs: one run per job. Rank 0 (or a single process) writes it; on any other rank
`TrainingTracer` is a follower (`is_writer` False): it stores nothing, `log()` only moves the
step, and `watch()` captures this rank's gradients for the per-rank summaries rank 0 stores
(`tracer.capture.gradients.ranks`). Call `init`/`watch`/`step`/`finish` on every rank alike.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Optional

from tracer.capture.collector import CollectorSet
from tracer.config import TracerConfig
from tracer.core import lifecycle
from tracer.core.adapter_calls import ACTIVE, AdapterCalls
from tracer.core.ending import record_end
from tracer.core.halting import HaltAgreement
from tracer.core.model_saves import ModelSaves, remove_pins_of
from tracer.core.starting import start_or_resume
from tracer.core.stopping import Stopping
from tracer.core.values import check_metrics
from tracer.core.writer import RunWriter
from tracer.core.writes import (
    Background,
    CheckpointRequest,
    DiscardingWriter,
    Writer,
    WriteReport,
)
from tracer.detection.runner import DetectorSet, build_detectors
from tracer.distributed import rank_and_world_size
from tracer.plugins.manager import get_plugin_manager
from tracer.records import AnomalyWrite, Collected
from tracer.storage.base import StorageBackend
from tracer.storage.registry import open_storage
from tracer.storage.retention import apply_retention

logger = logging.getLogger(__name__)

MODE_ENV = "TRACER_MODE"
FINISH_TIMEOUT_S = 30.0
_ACTIVE, _ENDING, _ENDED, _DISABLED = ACTIVE, "ending", "ended", "disabled"
_FORKED = "forked"  # in a child forked from the run's process: inert (see forked_away)
FOLLOWER_COLLECTORS = frozenset({"gradients"})
# A fresh run takes one extra checkpoint here, long before the first interval one (step 1000
# by default): what a model gets wrong from its initialisation (vanishing gradients, a dead
# layer) shows in its first steps, and the per-layer detectors only see checkpoints.
EARLY_CHECKPOINT_STEP = 10


def tracing_disabled() -> bool:
    """`TRACER_MODE=disabled` makes every run a no-op, like `WANDB_MODE=disabled`."""
    return os.environ.get(MODE_ENV, "").strip().lower() == "disabled"


class TrainingTracer(Stopping, AdapterCalls):
    """One traced training run. `TrainingTracer(config)` starts it; `finish()` ends it."""

    def __init__(self, config: TracerConfig) -> None:
        if not isinstance(config, TracerConfig):
            raise TypeError(f"TrainingTracer needs a TracerConfig, got {type(config).__name__}")
        self.config = config
        self._step = 0
        self._last_closed_step = -1
        self._pending: dict[str, Any] = {}
        self._interval = config.checkpoint_interval
        self._next_checkpoint = config.checkpoint_interval
        self.run_id: str = "disabled"
        self.run_name: str = config.run_name or "disabled"
        self._halt: Optional[AnomalyWrite] = None
        # Why training must stop now, from a decision every rank took alike (stop_training).
        self._stop_reason: Optional[dict[str, object]] = None
        self._halt_checkpoint: Optional[str] = None  # where to restart, named by the halt
        self._saves: Optional[ModelSaves] = None
        self._fork_warned = False
        # How the atexit handler ends a run nobody finished. An adapter whose framework has
        # no exception event sets "failed" while training runs (its end event resets it).
        self.status_at_exit = "finished"
        self.error_at_exit: Optional[str] = None
        # The framework's own count of completed optimizer steps, set by adapters: a run
        # that ends in the middle of a step (a crash) then stores the steps really done.
        self.completed_steps: Optional[Callable[[], int]] = None
        self.rank, self.world_size = 0, 1
        self._agreement: Optional[HaltAgreement] = None
        if tracing_disabled():
            self._state = _DISABLED
            return
        self.rank, self.world_size = rank_and_world_size()
        if config.halt_on:  # every rank stops at the same step (tracer.core.halting)
            self._agreement = HaltAgreement.for_job(self.rank, self.world_size)
        self._plugins = get_plugin_manager()
        detectors = build_detectors(
            self._plugins.detector_classes(), config.detectors, config.loss_metrics
        )  # a bad setting fails before storage
        unknown = set(config.halt_on) - {
            t for d in self._plugins.detector_classes().values() for t in d.anomaly_types
        }
        if unknown:
            raise ValueError(f"halt_on names unknown anomaly types: {sorted(unknown)}")
        if not self.is_writer:
            self._start_as_follower()
            return
        self.storage: StorageBackend = open_storage(config)
        try:
            started = start_or_resume(self.storage, config)
        except BaseException:
            self.storage.close()
            raise
        self.run_id, self.run_name, self._step = started.run_id, started.run_name, started.step
        self._resumed = started.resumed
        self._start_step = self._step
        self._last_closed_step = self._step - 1
        self._next_checkpoint = (self._step // self._interval + 1) * self._interval
        if self._step < EARLY_CHECKPOINT_STEP < self._next_checkpoint:
            self._next_checkpoint = EARLY_CHECKPOINT_STEP
        self._writer: Writer = RunWriter(
            self.storage,
            self.run_id,
            asynchronous=config.async_writes,
            buffer_size=config.write_buffer_size,
            flush_interval=config.flush_interval,
            heartbeat_interval=config.heartbeat_interval,
            progress=lambda: self._step,
            on_checkpoint_written=self._checkpoint_written,
            detectors=DetectorSet(self.run_id, detectors) if detectors else None,
            anomaly_sections=lambda step: self._collectors.anomaly_sections(step),
            anomaly_data_pending=lambda step: self._collectors.anomaly_data_pending(step),
            on_anomalies=self._anomalies_found,
            max_backlog_bytes=int(config.max_backlog_mb * (1 << 20)),
        )
        self._collectors = CollectorSet([])
        self._saves = ModelSaves(
            config,
            self.storage,
            self.run_id,
            lambda event: self.submit_background(Collected([], [event])),
            lambda: self._writer.detected_through,
        )
        self._state = _ACTIVE
        lifecycle.register(self)
        self._collectors = self._start_collectors()
        try:
            deleted = apply_retention(self.storage, config.project_name, config.retention_days)
            remove_pins_of(self.storage, deleted)
        except Exception:
            logger.exception("Tracer's retention cleanup failed; no run was deleted by it.")
        self._plugins.run_started(self)

    # -- start ------------------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run (rank 0 of a job, or a single process)."""
        return self.rank == 0 or self.world_size <= 1

    def _start_as_follower(self) -> None:
        """Rank > 0: no storage, no writer thread; only gradient capture, for the per-rank
        summaries that rank 0 gathers (see the module docstring)."""
        self.run_id = ""
        self.run_name = self.config.run_name or ""
        self._writer = DiscardingWriter()
        self._next_checkpoint = sys.maxsize  # checkpoints are rank 0's
        self._collectors = self._start_collectors(only=FOLLOWER_COLLECTORS)
        self._state = _ACTIVE
        lifecycle.register(self)

    def _start_collectors(self, only: Optional[frozenset[str]] = None) -> CollectorSet:
        collectors = []
        for name, factory in self._plugins.collector_factories().items():
            if only is not None and name not in only:
                continue
            try:
                collector = factory(self)
            except Exception:
                logger.exception("Tracer collector %r failed to start; it is skipped.", name)
                continue
            if collector is not None:
                collector.name = name
                collectors.append(collector)
        return CollectorSet(collectors)

    # -- the per-step path ------------------------------------------------------------------
    @property
    def current_step(self) -> int:
        """The step that `log()` writes to now."""
        return self._step

    @property
    def checkpoint_due(self) -> bool:
        """True when closing the current step will take an interval checkpoint."""
        return self._step >= self._next_checkpoint

    @property
    def state(self) -> str:
        """ "active" until finished, then "ended"; "disabled" under TRACER_MODE=disabled."""
        return self._state

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        """Record metrics at the current step, or at `step` when the framework owns the count.

        Several calls in one step merge (a later value of the same name wins). Values are
        numbers: int, float, a one-element tensor (read off the training thread) or a numpy
        scalar; anything else raises TypeError naming the metric, and nothing is recorded.
        """
        if self._state is not _ACTIVE:
            self._skip_or_refuse()
            return
        checked = check_metrics(metrics)
        if step is not None and step != self._step:
            if type(step) is not int:
                if isinstance(step, bool) or not isinstance(step, int):
                    raise TypeError(f"step must be an int, got {type(step).__name__}")
                step = int(step)
            if step < 0:
                raise ValueError(f"step must be >= 0, got {step}")
            self._close_step()
            self._step = step
        self._pending.update(checked)

    def step(self) -> None:
        """Close the current step (its metrics go to the writer) and move to the next one.

        Raises `TrainingHalted` (after finishing the run) once an anomaly of a `halt_on`
        type has been found.
        """
        if self._state is not _ACTIVE:
            self._skip_or_refuse()
            return
        self._close_step()
        self._step += 1
        # `should_stop`, its property call spared on the usual path (no halt, one process)
        if (
            self._halt is not None or self._agreement is not None or self._stop_reason is not None
        ) and self.should_stop:
            self._halt_now()

    def _anomalies_found(self, anomalies: list[AnomalyWrite]) -> None:
        """Writer thread, after the anomalies are stored: hooks, the pin of the last healthy
        checkpoint, then the halt flag (last: the halt names the pinned path)."""
        for anomaly in anomalies:
            self._plugins.anomaly_found(self, anomaly)
            if self._saves is not None:
                self._saves.anomaly_opened(anomaly)
            self._halt_if_asked(anomaly)

    def _close_step(self, checkpoint: bool = True) -> None:
        step = self._step
        if self._collectors.stepping:  # first: once the writer sees this step's metrics, the
            self._collectors.step_end(step)  # collectors must already know the step
        # Closed before its values go: the writer may empty the dict as soon as it has it (and
        # hands it back for reuse), so a signal landing in between must find the step closed.
        self._last_closed_step = step
        if self._pending:
            self._pending = self._writer.submit_step(step, time.time(), self._pending)
        if self._agreement is not None:
            self._agreement.tick(step, self._halt is not None)
        if checkpoint and step >= self._next_checkpoint:
            self._next_checkpoint = (step // self._interval + 1) * self._interval
            self._checkpoint(step, "interval" if step >= self._interval else "early")

    def _checkpoint(self, step: int, reason: str) -> None:
        sections = self._collectors.checkpoint(step, reason)
        self._writer.submit(CheckpointRequest(step, time.time(), reason, sections))

    def watch(
        self, model: Any, optimizer: Optional[Any] = None, *, capture_point: Optional[str] = None
    ) -> None:
        """Track gradient health (and batch samples) of `model`; see `tracer.capture.gradients`.

        Pass the `optimizer` to capture once per optimizer step, after accumulation, unscaling
        and all-reduce; without it, capture happens at the end of each backward pass. A
        framework's wrapper (Accelerate's, Lightning's, Fabric's) is unwrapped to the torch
        optimizer that really steps (`capture/gradients/optimizers.py`). Framework adapters
        pass `capture_point` (a name for the record) and call `capture_gradients()` at their
        framework's pre-optimizer event instead of hooks; their optimizer, when they know it,
        gets the silent-bug probe, and one that cannot be hooked (a DeepSpeed placeholder) is
        left out instead of refused. `track_gradients=False` attaches nothing. Hooks are
        removed at `finish()`.
        """
        if self._state is not _ACTIVE:
            self._skip_or_refuse()
            return
        if not (hasattr(model, "named_parameters") and hasattr(model, "register_forward_hook")):
            raise TypeError(f"tracer.watch() needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None:
            from tracer.capture.gradients.optimizers import optimizer_to_hook

            optimizer = optimizer_to_hook(optimizer, model, adapter=capture_point is not None)
        self._collectors.watch(model, optimizer, capture_point)

    def submit_background(self, source: Collected | Callable[[], Collected]) -> None:
        """For collectors: hand data (or a function producing it) to the writer thread."""
        if self._state is _ACTIVE or self._state is _ENDING:
            self._writer.submit(Background(source))

    def _skip_or_refuse(self) -> None:
        """A call on a run that is not active: nothing to do when tracing is disabled or in
        a forked child (warned once there), an error once the run has ended."""
        if self._state is _DISABLED:
            return
        if self._state is _FORKED:
            if not self._fork_warned:
                self._fork_warned = True
                logger.warning(
                    "Tracer: process %d was forked from the one running run %s; what it logs"
                    " is dropped. Call tracer.init() in it for a run of its own.",
                    os.getpid(),
                    self.run_id,
                )
            return
        raise RuntimeError(self._ended_message())

    def forked_away(self) -> None:
        """In a child just forked from this run's process (`lifecycle`, os.register_at_fork).

        The child has none of the parent's threads (writer, sampler), and a storage
        connection carried across fork must not be used: the run becomes inert here, and
        its storage is never closed from the child (closing could touch the parent's file).
        The parent's run goes on untouched."""
        self._state = _FORKED
        storage = getattr(self, "storage", None)
        if storage is not None:
            lifecycle.keep_forever(storage)

    @property
    def active(self) -> bool:
        """Whether the run is going on in this process: started, not ended, not a forked
        child's inherited copy (collectors' hooks act only then)."""
        return self._state is _ACTIVE

    def _ended_message(self) -> str:
        return f"run {self.run_id} ({self.run_name!r}) is finished; call tracer.init() again"

    # -- reading back -----------------------------------------------------------------------
    def flush(self, timeout: float = FINISH_TIMEOUT_S) -> bool:
        """Write everything logged so far (the open step too) before returning."""
        if self._state is not _ACTIVE:
            return self._state is _DISABLED
        if self._pending:
            self._pending = self._writer.submit_step(self._step, time.time(), self._pending)
        return self._writer.flush(timeout)

    def _checkpoint_written(self, step: int, reason: str) -> None:
        self._plugins.checkpoint_written(self, step, reason)

    @property
    def write_report(self) -> WriteReport:
        """What became of this run's data: points written, and lost (never written, or
        dropped while storage failed); final once the run has finished. `finish()` logs a
        warning with the same figures when anything was lost."""
        writer = getattr(self, "_writer", None)  # none when tracing is disabled
        return writer.report() if writer is not None else DiscardingWriter().report()

    # -- end --------------------------------------------------------------------------------
    def finish(
        self,
        status: str = "finished",
        error: Optional[str] = None,
        *,
        total_steps: Optional[int] = None,
    ) -> None:
        """Flush everything, record the final status and release the storage. Idempotent.

        `total_steps` defaults to the number of steps of a loop counting from 0; adapters
        whose framework counts from 1 pass its own count."""
        if self._state is not _ACTIVE:
            return
        if status not in ("finished", "failed", "killed"):
            raise ValueError(f"status must be finished, failed or killed, got {status!r}")
        self._state = _ENDING
        lifecycle.unregister(self)
        open_data = bool(self._pending) or self._collectors.holds_open_step()
        had_steps = open_data or self._last_closed_step >= 0
        if open_data:  # metrics or a gradient capture of the step still open (a crash in it)
            self._close_step(checkpoint=False)  # the "finish" checkpoint below covers it
        counted = max(self._step, self._last_closed_step + 1)
        self._step = counted
        if total_steps is None:
            total_steps = self._framework_count(default=counted)
        if not self.is_writer:
            self._collectors.close()  # publishes this rank's last summaries
            self._state = _ENDED
            return
        if had_steps:
            self._checkpoint(self._last_closed_step, "finish")
        self._collectors.close()
        if self._saves is not None and self._saves.pins is not None:
            # Detection of what is queued may still pin: let it, then let the pins' copies
            # finish while the writer can still record how they went.
            self._writer.flush(FINISH_TIMEOUT_S)
            self._saves.close()
        self._state = _ENDED
        record_end(
            self.storage,
            self.run_id,
            self._writer,
            status,
            error,
            total_steps,
            FINISH_TIMEOUT_S,
            announce=lambda: self._plugins.run_ended(self, status),
        )

    def _framework_count(self, default: int) -> int:
        if self.completed_steps is None:
            return default
        try:
            return int(self.completed_steps())
        except Exception:  # the framework's objects may be half torn down at exit
            logger.debug("Tracer could not read the framework's step count", exc_info=True)
            return default

    def __enter__(self) -> TrainingTracer:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed", error="KeyboardInterrupt")
        else:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return (
            f"TrainingTracer(project={self.config.project_name!r}, run_id={self.run_id!r},"
            f" run_name={self.run_name!r}, step={self._step}, state={self._state!r})"
        )
