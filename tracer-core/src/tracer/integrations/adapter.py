"""The shape every framework adapter shares, so a new one is about a hundred lines of event
mapping and nothing else.

`TracerAdapter` is a mixin for the framework's own base class (a callback, a logger, a
tracker): call `self.init_tracer(project, run_name, settings)` in `__init__` and

- the settings are checked as a `TracerConfig` there, so a typo fails at the call site, not
  when training starts;
- `start_run(config=..., resume=..., unfinished=...)` starts the run (or a follower on ranks
  other than 0, which the run decides); with `unfinished`, a run nobody ends reads "failed"
  at exit, for frameworks that have no exception event;
- `end_run(total_steps)` ends it "finished", or "failed" when `halt_on` (or too many skipped
  non-finite steps, `on_nonfinite="skip"`) stopped training;
  `fail_run(exception)` ends it "failed" (or "killed" for Ctrl-C);
- `active` says whether there is a run to feed;
- a pickled or deep-copied adapter (`torch.save(trainer)`, `copy.deepcopy(callbacks)`, a
  spawned worker) carries its settings and the id of its run, never the live run, which
  belongs to the process that started it: the copy starts (or resumes) the run when used.

`RunNotFoundError` is what `start_run(resume=...)` raises when the run to continue is not in
this storage (a checkpoint from another machine): adapters start a new run and warn.

`torch_optimizer(optimizer)` is the torch optimizer under a framework's wrapper (the one
whose step hooks fire once per real optimizer step); `run.watch` unwraps by itself.

`scalar_metrics(values)` is the one filter for a framework's metrics dict: numbers and
one-element tensors, the tensors handed over unread (the run reads them on its writer
thread), so an adapter never makes the device wait.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Optional

from tracer.capture.gradients.optimizers import torch_optimizer
from tracer.config import TracerConfig
from tracer.core.naming import new_run_id
from tracer.core.tracer import TrainingTracer
from tracer.exceptions import DuplicateRunError, RunNotFoundError

logger = logging.getLogger(__name__)

HALTED = "training stopped by halt_on"

__all__ = ["HALTED", "RunNotFoundError", "TracerAdapter", "scalar_metrics", "torch_optimizer"]


def scalar_metrics(
    values: Optional[Mapping[str, Any]], keep: Optional[Callable[[str], bool]] = None
) -> tuple[dict[str, Any], list[str]]:
    """(the loggable entries, the names of the others) of a metrics dict, copied: Python and
    numpy numbers (bools as 0/1), and one-element tensors or arrays as they are. Entries
    whose name `keep` rejects are left out of both."""
    kept: dict[str, Any] = {}
    skipped: list[str] = []
    for key, value in (values or {}).items():
        if keep is not None and not keep(key):
            continue
        if isinstance(value, numbers.Real):
            kept[key] = value
            continue
        numel = getattr(value, "numel", None)
        size = numel() if callable(numel) else getattr(value, "size", None)
        if size == 1 and hasattr(value, "dtype"):
            kept[key] = value  # a tensor stays on its device: read off the training thread
        else:
            skipped.append(key)
    return kept, skipped


class TracerAdapter:
    """Mixin base of framework adapters (see the module docstring)."""

    settings: dict[str, Any]
    run: Optional[TrainingTracer]
    # Attributes that belong to this process (the run, hook handles, framework objects):
    # a pickled or copied adapter gets a fresh value from these factories instead.
    process_local: ClassVar[dict[str, Callable[[], Any]]] = {"run": lambda: None}

    def init_tracer(
        self, project: str, run_name: Optional[str], settings: Mapping[str, Any]
    ) -> None:
        """Check and keep the TracerConfig settings; no run yet."""
        self.settings = {"project_name": project, "run_name": run_name, **settings}
        TracerConfig(**self.settings)  # validate now, at the call site
        self.run = None
        self._planned_run_id: Optional[str] = None

    @property
    def planned_run_id(self) -> str:
        """The id the next new run of this adapter gets, known before it starts (a framework
        may need a version or a folder name at setup). A pickled copy plans its original's
        run id, so it continues that run."""
        if self._planned_run_id is None:
            self._planned_run_id = self.settings.get("run_id") or new_run_id()
        return self._planned_run_id

    @property
    def run_id(self) -> str:
        """The run's id, or before it starts the id it will get (a logger's `version`)."""
        return self.run.run_id if self.run is not None else self.planned_run_id

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.run is not None:
            state["_planned_run_id"] = self.run.run_id
        for name in type(self).process_local:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name, fresh in type(self).process_local.items():
            setattr(self, name, fresh())

    @property
    def active(self) -> bool:
        """Whether a run is going on in this process (started, not ended)."""
        return self.run is not None and self.run.active

    def start_run(
        self,
        config: Optional[Mapping[str, Any]] = None,
        resume: Optional[str] = None,
        unfinished: Optional[str] = None,
        completed_steps: Optional[Callable[[], int]] = None,
        resume_at: Optional[int] = None,
    ) -> TrainingTracer:
        """Start the run with `config` (merged under the user's own `config` setting), or
        resume run `resume`; a new run gets `planned_run_id`, and when a run with that id
        exists already (a copy of this adapter started it) that run is resumed.

        With `unfinished`, a run nobody ends reads "failed" with that error (for frameworks
        whose end event is missed when training raises); without it, a forgotten end reads
        "finished", as for `tracer.init`. `completed_steps` returns the framework's count of
        optimizer steps done: a run that ends mid-step (a crash) stores that count.
        `resume_at`, with `resume`: the step of the checkpoint training resumes from; what the
        run stored after it (a history that training now redoes) is dropped."""
        settings = dict(self.settings)
        settings["config"] = {**(config or {}), **(settings.get("config") or {})}
        if resume is not None:
            settings["resume"] = resume
        else:
            settings["run_id"] = self.planned_run_id
        try:
            run = TrainingTracer(TracerConfig(**settings))
        except DuplicateRunError:
            if resume is not None:
                raise
            settings["resume"], settings["run_id"] = settings["run_id"], None
            run = TrainingTracer(TracerConfig(**settings))
        self.run = run
        self._planned_run_id = None
        if resume is not None and resume_at is not None:
            run.rewind(resume_at)
        if unfinished is not None:
            run.status_at_exit = "failed"
            run.error_at_exit = unfinished
        run.completed_steps = completed_steps
        return run

    def end_run(self, total_steps: Optional[int] = None) -> None:
        """End the run: "failed" when `halt_on` or a skip streak stopped training (with the
        streak's reason), else "finished"."""
        run = self.run
        if run is None or not run.active:
            return
        if run.should_stop:
            reason = run.halt_reason  # the anomaly, and the checkpoint to restart from
            error = run.stop_message or (HALTED if reason is None else f"{HALTED}: {reason}")
            run.finish("failed", error=error, total_steps=total_steps)
        else:
            run.finish(total_steps=total_steps)

    def fail_run(self, exception: BaseException) -> None:
        """End the run for an exception the framework reported: "killed" for Ctrl-C. A resumed
        run in which nothing happened yet is left as it was stored (the failure is the
        resuming's, e.g. a checkpoint that does not fit the settings), with a warning."""
        run = self.run
        if run is None or not run.active:
            return
        error = f"{type(exception).__name__}: {exception}"
        if run.end_untouched_resume():
            logger.warning(
                "Tracer: resuming run %s failed before its first step (%s); the run is left"
                " as it was.",
                run.run_id,
                error,
            )
            return
        status = "killed" if isinstance(exception, KeyboardInterrupt) else "failed"
        run.finish(status, error=error)
