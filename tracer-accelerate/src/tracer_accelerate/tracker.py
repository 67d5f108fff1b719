"""`AccelerateTracker`: Tracer as an Accelerate tracker (`Accelerator(log_with=...)`).

Accelerate calls a tracker on the main process only:
- `init_trackers(project_name, config)` -> `start()` then `store_init_configuration(config)`:
  the run starts there, with that config (or at the first `log()` when there is none);
- `accelerator.log(values, step)` -> `log()`: numbers and one-element tensors are recorded at
  `step`; strings (which Accelerate allows) are skipped with one warning;
- `end_training()` -> `finish()`: "failed" when `halt_on` stopped training, else "finished".

`accelerator.log` without a `step`: when `tracer_accelerate.watch` counts optimizer steps,
values go to the current optimizer step; otherwise each call is a step of its own, as in
wandb. Gradient capture and the other ranks' summaries come from `tracer_accelerate.watch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

from accelerate.tracking import GeneralTracker

from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import TracerAdapter, scalar_metrics

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

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        # Set by tracer_accelerate.watch: the number of optimizer steps done so far.
        self.optimizer_steps: Optional[Callable[[], int]] = None
        self._warned_skipped = False

    @property
    def tracker(self) -> Optional[TrainingTracer]:
        """The run (Accelerate's `get_tracker("tracer", unwrap=True)` returns it)."""
        return self.run

    def start(self) -> None:
        """Called by `init_trackers`; the run starts with the config that follows."""

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        if self.run is None:
            self.ensure_run(dict(values))
        else:
            logger.warning(
                "Tracer run %s already started; its config is kept as it was and %s is ignored.",
                self.run.run_id,
                sorted(values),
            )

    def ensure_run(self, config: Optional[dict[str, Any]] = None) -> TrainingTracer:
        """The run, started now if it was not."""
        if self.run is None or self.run.state == "ended":
            return self.start_run(config)
        return self.run

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
        if step is not None:
            run.log(kept, step=int(step))
        elif self.optimizer_steps is not None:
            run.log(kept)
        else:
            run.log(kept)
            run.step()

    def finish(self) -> None:
        run = self.run
        if run is None or not run.active:
            return
        total = self.optimizer_steps() if self.optimizer_steps is not None else None
        if total is not None and total > 0:
            run.log({}, step=total)  # close the last optimizer step with its capture
        self.end_run(total_steps=total)
