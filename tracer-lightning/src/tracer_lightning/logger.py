"""`TracerLogger`: a Lightning `Logger`, so `Trainer(logger=...)` routes `self.log` into Tracer.

For users who expect a logger. With a `LightningCallback` on the same Trainer both write one
run (the callback adds gradient health, checkpoints and saves). Only rank zero writes.

- Steps: values are stored at `trainer.global_step`, the optimizer steps done when they were
  logged (the first step's loss at 1), the numbering of the callback and of gradient capture.
  Lightning hands loggers a 0-based batch count instead; the logger learns its Trainer from
  `log_graph`, which Lightning calls at the start of every stage. A `step` the module logs
  itself is kept as it is.
- Stages: `fit` then `validate`/`test` on the same Trainer store into the same run: the run
  `finalize` finished is continued by the next stage's first call and finished again. A
  failed run is never continued; a stage without an earlier run starts a run of its own.
- A fit's run starts at `log_hyperparams` or `log_graph` (both at the start of the stage,
  after callbacks' `on_fit_start`), a later stage's at its first metrics.
- `version` is the run id, known before the run starts (Lightning names checkpoint folders
  `<name>/<version>/checkpoints` at setup).
"""

from __future__ import annotations

import weakref
from argparse import Namespace
from collections.abc import Callable
from typing import Any, ClassVar, Optional, Union

from lightning_utilities.core.rank_zero import rank_zero_only

from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import TracerAdapter, scalar_metrics
from tracer_lightning.namespaces import bases, rank_zero_experiment

_LoggerBases = bases("loggers.Logger")


def _trainer_of(model: Any) -> Any:
    try:
        return model.trainer
    except (AttributeError, RuntimeError):  # a module not attached to a Trainer
        return None


def _automatic_step(trainer: Any) -> Optional[int]:
    """The step Lightning passes to loggers when the module logged none (its count of batches
    that stepped the optimizer), or None if this Lightning version hides it."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    value = getattr(loop, "_batches_that_stepped", None)
    return value if isinstance(value, int) else None


class TracerLogger(TracerAdapter, *_LoggerBases):  # type: ignore[misc]
    """`Trainer(logger=TracerLogger(project="p"))`: metrics of `self.log` at their step."""

    process_local: ClassVar[dict[str, Callable[[], Any]]] = {
        **TracerAdapter.process_local,
        "_trainer": lambda: None,
        "_attached": lambda: False,  # attached to another adapter's live run
    }

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        self._hyperparameters: dict[str, Any] = {}
        self._attached = False
        self._continuable = False  # the last run ended finished: a later stage continues it
        self._last_step = 0
        self._trainer: Optional[weakref.ref[Any]] = None

    @property
    def name(self) -> str:
        return str(self.settings["project_name"])

    @property
    def version(self) -> str:
        return self.run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> Optional[TrainingTracer]:
        """The Tracer run, or None before it starts; Lightning's dummy on other ranks.

        Lightning touches this during setup, before it calls `log_hyperparams` and before a
        `LightningCallback` on the same Trainer has loaded the run id to resume, so the run is
        not started here but by `log_hyperparams` or the first metrics (or adopted from the
        callback).
        """
        return self.run

    def _start_run(self) -> Optional[TrainingTracer]:
        if getattr(rank_zero_only, "rank", 0) != 0:
            return None
        if self.run is None:
            self.start_run(self._hyperparameters, completed_steps=self._steps_done)
        elif not self.run.active and self._continuable and not self._attached:
            self._continuable = False
            self.start_run(resume=self.run.run_id, completed_steps=self._steps_done)
        if self.run is not None:
            self._last_step = max(self._last_step, self.run.current_step)
        return self.run

    def _steps_done(self) -> int:
        """The optimizer steps done: the Trainer's count, or (a logger used without one, such
        as an unpickled copy) the last step stored."""
        trainer = self._trainer() if self._trainer is not None else None
        return int(trainer.global_step) if trainer is not None else self._last_step

    def attach(self, run: TrainingTracer) -> None:
        """Use the run a `LightningCallback` started (one run per job); the callback then
        stores the metrics, at the optimizer step they belong to."""
        self.run = run
        self._attached = True

    @rank_zero_only
    def log_hyperparams(
        self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any
    ) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params or {})
        self._hyperparameters.update({str(k): v for k, v in values.items()})
        # Lightning calls this after callbacks' on_fit_start: a LightningCallback has attached
        # its run by now, else the logger's own run starts (or continues) here.
        self._start_run()

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Lightning calls this at the start of every stage: the logger keeps its Trainer
        (weakly) to store values at the optimizer step. A fit's run starts here at the latest
        (a module without `save_hyperparameters` gets no `log_hyperparams`, and a short fit no
        `log_metrics` before `log_every_n_steps`): every fit is a run, with its steps."""
        trainer = _trainer_of(model)
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        stage = getattr(getattr(getattr(trainer, "state", None), "fn", None), "value", None)
        if stage == "fit" and not self._attached:
            self._start_run()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self._attached:  # the callback stores the module's metrics, at their optimizer step
            return
        run = self._start_run()
        if run is None or not run.active:
            return
        values = scalar_metrics(metrics)[0]
        if values:
            at = self._step_for(step)
            run.log(values, step=at)
            if at is not None:
                self._last_step = max(self._last_step, at)

    def _step_for(self, step: Optional[int]) -> Optional[int]:
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None:
            return step
        if step is None or step == _automatic_step(trainer):
            return int(trainer.global_step)
        return step  # the module logged its own `step`

    @rank_zero_only
    def finalize(self, status: str) -> None:
        run = self.run
        if run is None or not run.active or self._attached:
            return  # (a callback's run is the callback's to end; halt_on is the callback's)
        succeeded = status in ("success", "finished")
        if succeeded:
            self.end_run(total_steps=self._steps_done())
        else:
            run.finish("failed", error=f"Lightning finalized the logger with status {status!r}")
        self._continuable = succeeded
