"""`TracerLogger`: a Lightning `Logger`, so `Trainer(logger=...)` routes `self.log` into Tracer.

For users who expect a logger. With a `LightningCallback` on the same Trainer both write one
run (the callback adds gradient health, checkpoints and saves). Only rank zero writes.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any, Optional, Union

from lightning_utilities.core.rank_zero import rank_zero_only

from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import TracerAdapter, scalar_metrics
from tracer_lightning.namespaces import bases

_LoggerBases = bases("loggers.Logger")


class TracerLogger(TracerAdapter, *_LoggerBases):  # type: ignore[misc]
    """`Trainer(logger=TracerLogger(project="p"))`: metrics of `self.log` at their step."""

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        self._hyperparameters: dict[str, Any] = {}
        self._attached = False

    @property
    def name(self) -> str:
        return str(self.settings["project_name"])

    @property
    def version(self) -> Optional[str]:
        return self.run.run_id if self.run is not None else None

    @property
    def experiment(self) -> Optional[TrainingTracer]:
        """The Tracer run, or None before it starts.

        Lightning touches this during setup, before it calls `log_hyperparams` and before a
        `LightningCallback` on the same Trainer has loaded the run id to resume, so the run is
        not started here but by `log_hyperparams` or the first metrics (or adopted from the
        callback).
        """
        return self.run

    def _start_run(self) -> Optional[TrainingTracer]:
        if self.run is None and getattr(rank_zero_only, "rank", 0) == 0:
            self.start_run(self._hyperparameters)
        return self.run

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
        # its run by now, else the logger's own run starts here with these hyperparameters.
        self._start_run()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self._attached:  # Lightning's step is global_step - 1 here: the callback logs them
            return
        run = self._start_run()
        if run is None or not run.active:
            return
        values = scalar_metrics(metrics)[0]
        if values:
            run.log(values, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        run = self.run
        if run is not None and run.active:  # (halt_on is the callback's: a logger can't stop)
            run.finish("finished" if status in ("success", "finished") else "failed")
