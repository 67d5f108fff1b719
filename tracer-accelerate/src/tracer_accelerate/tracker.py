"""`AccelerateTracker`: Tracer as an Accelerate tracker (`Accelerator(log_with=...)`).

Accelerate calls a tracker on the main process only:
- `init_trackers(project_name, config)` -> `start()` then `store_init_configuration(config)`:
  the config is kept, and the run starts when training does, not here. A resumed script calls
  `init_trackers` before `accelerator.load_state`, and only `load_state` tells which run to
  continue (`tracer_accelerate.watch` reads the run id saved in the checkpoint); starting
  here would leave a stray new run behind. So the run starts at the first of: the watched
  model's first forward or optimizer step, a `save_state`, a `load_state` of a checkpoint
  that names a run (that run is resumed), the first `accelerator.log`, `end_training`;
- `accelerator.log(values, step)` -> `log()`: numbers and one-element tensors are recorded;
  strings (which Accelerate allows) are skipped with one warning;
- `end_training()` -> `finish()`: "failed" when `halt_on` stopped training, else "finished",
  with the optimizer steps the watch counted as `total_steps`.

Which step `accelerator.log` values land at: with `tracer_accelerate.watch`, Tracer's step is
the optimizer step it counts, so values go to the current optimizer step whatever `step`
says (Accelerate's examples log with `step=epoch`; honouring it would move the run back and
forth between two scales); a `step` that differs is warned about once. Without the watch a
`step` is used as given, and each call without one is a step of its own, as in wandb.

A pickled or deep-copied tracker carries its settings, its config and the id of its run (or
of the run a loaded checkpoint named), never the live run or the watch's step counter, which
belong to this process (`process_local`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Optional

from accelerate.tracking import GeneralTracker

from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import RunNotFoundError, TracerAdapter, scalar_metrics

logger = logging.getLogger(__name__)

TRACKER_NAME = "tracer"


class AccelerateTracker(TracerAdapter, GeneralTracker):  # type: ignore[misc]
    """`Accelerator(log_with=[AccelerateTracker("my-project", checkpoint_interval=100)])`.

    Keyword arguments are `TracerConfig` settings, checked here so a typo fails at once.
    After `import tracer_accelerate` the name "tracer" works too:
    `Accelerator(log_with="tracer")` with settings in `init_kwargs={"tracer": {...}}`.
    """

    name = TRACKER_NAME
    requires_logging_directory = False
    main_process_only = True
    process_local: ClassVar[dict[str, Callable[[], Any]]] = {
        **TracerAdapter.process_local,
        "optimizer_steps": lambda: None,  # a method of this process's watch
    }

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        # Set by tracer_accelerate.watch: the number of optimizer steps done so far.
        self.optimizer_steps: Optional[Callable[[], int]] = None
        self._config: dict[str, Any] = {}
        self._resume: Optional[str] = None  # the run a loaded checkpoint names
        self._warned_skipped = False
        self._warned_step = False

    @property
    def tracker(self) -> Optional[TrainingTracer]:
        """The run (Accelerate's `get_tracker("tracer", unwrap=True)` returns it); None until
        training starts (see the module docstring)."""
        return self.run

    def start(self) -> None:
        """Called by `init_trackers`; the run starts later (see the module docstring)."""

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        if self.run is None:
            self._config.update(values)
        else:
            logger.warning(
                "Tracer run %s already started; its config is kept as it was and %s is ignored.",
                self.run.run_id,
                sorted(values),
            )

    def ensure_run(self) -> TrainingTracer:
        """The run, started now if it was not: the run a loaded checkpoint named, resumed, or
        else a new one with the `init_trackers` config."""
        if self.run is not None and self.run.state != "ended":
            return self.run
        resume, self._resume = self._resume, None
        if resume is not None:
            try:
                done = self.optimizer_steps() if self.optimizer_steps is not None else None
                return self.start_run(
                    self._config,
                    resume=resume,
                    completed_steps=self.optimizer_steps,
                    resume_at=done,  # the checkpoint's count: what came after is redone
                )
            except RunNotFoundError:
                logger.warning(
                    "Tracer run %s, named by the loaded checkpoint, is not in this storage"
                    " (%s); a new run starts instead.",
                    resume,
                    self.settings.get("storage_path") or "the default location",
                )
        return self.start_run(self._config, completed_steps=self.optimizer_steps)

    def resume_from(self, run_id: str) -> bool:
        """Continue run `run_id` (read from a checkpoint by the watch's `load_state` hook)
        when this tracker's run starts. False, with a warning, when a different run has
        started already: one job writes one run, and that one is kept."""
        run = self.run
        if run is None or run.state == "ended":
            self._resume = run_id
            return True
        if run.run_id == run_id:
            return True
        logger.warning(
            "Tracer run %s started before accelerator.load_state (something was logged or"
            " trained first), so the checkpoint's run %s is not continued; call load_state"
            " before training or accelerator.log to continue it.",
            run.run_id,
            run_id,
        )
        return False

    def log(self, values: dict[str, Any], step: Optional[int] = None, **kwargs: Any) -> None:
        run = self.ensure_run()
        if not run.active:
            return
        kept, skipped = scalar_metrics(values)
        if skipped and not self._warned_skipped:
            self._warned_skipped = True
            logger.warning(
                "Tracer records numbers only; skipped %s (and later such values).", skipped
            )
        if self.optimizer_steps is not None:  # Tracer's step is the watch's optimizer step
            current = self.optimizer_steps()
            if step is not None and int(step) != current and not self._warned_step:
                self._warned_step = True
                logger.warning(
                    "accelerator.log(step=%s): Tracer records these values at optimizer"
                    " step %d, the step tracer_accelerate.watch counts (its gradients are"
                    " there); later such steps likewise, without this warning.",
                    step,
                    current,
                )
            run.log(kept, step=current)
        elif step is not None:
            run.log(kept, step=int(step))
        else:
            run.log(kept)
            run.step()

    def finish(self) -> None:
        run = self.run if self.run is not None else self.ensure_run()  # nothing logged yet
        if not run.active:
            return
        total = self.optimizer_steps() if self.optimizer_steps is not None else None
        if total is not None and total > 0:
            run.log({}, step=total)  # close the last optimizer step with its capture
        self.end_run(total_steps=total)
