"""`TracerFabricLogger`: Tracer as a Lightning Fabric logger, with gradient health.

    tracer_logger = TracerFabricLogger(project="p", checkpoint_interval=100)
    fabric = Fabric(loggers=[tracer_logger])
    model, optimizer = fabric.setup(model, optimizer)
    tracer_logger.watch(model, optimizer)           # optional: gradient health
    for batch in loader:
        ...; fabric.backward(loss); optimizer.step(); optimizer.zero_grad()
        fabric.log_dict({"loss": loss})              # at the optimizer step just taken
        if tracer_logger.should_stop: break          # halt_on found an anomaly
    tracer_logger.finalize("success")

- `log_hyperparams(params)` starts the run with them as its config (else the first metrics do);
- `watch(model, optimizer)`: each optimizer step is a Tracer step (numbered from 1), its
  gradients captured right before they are applied, and with `on_nonfinite="skip"` the step
  skipped there when a gradient is non-finite on any rank (a step 16-bit precision's
  GradScaler skips never gets there); the optimizer gets the silent-bug probe;
- `fabric.log_dict(values)` without `step`: at the current optimizer step when watching,
  else each call is a step of its own (as in wandb); with `step`: at that step;
- `finalize(status)`: "finished" for "success", "failed" otherwise or when `halt_on` stopped
  training. Fabric calls every rank's loggers: rank 0 writes the run, the others get the
  follower Tracer gives them (their gradient summaries reach rank 0).
"""

from __future__ import annotations

import importlib
from argparse import Namespace
from collections.abc import Callable
from typing import Any, ClassVar, Optional, Union

from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import TracerAdapter, scalar_metrics, torch_optimizer

CAPTURE_POINT = "fabric_optimizer_step"


def _fabric_logger_base() -> tuple[type, ...]:
    """Fabric's `Logger` base: from `lightning`, or from the standalone `lightning_fabric`
    that `pytorch_lightning` brings."""
    for name in ("lightning.fabric.loggers.logger", "lightning_fabric.loggers.logger"):
        try:
            return (importlib.import_module(name).Logger,)
        except ImportError:
            continue
    raise ImportError("TracerFabricLogger needs Lightning Fabric: pip install lightning")


_FabricBases = _fabric_logger_base()


class TracerFabricLogger(TracerAdapter, *_FabricBases):  # type: ignore[misc]
    """`Fabric(loggers=[TracerFabricLogger(project="p")])`; keyword arguments are
    `TracerConfig` settings, checked here so a typo fails at once."""

    process_local: ClassVar[dict[str, Callable[[], Any]]] = {
        **TracerAdapter.process_local,
        "_handles": list,  # hooks on this process's optimizer
    }

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        self.optimizer_steps: Optional[int] = None  # counted once watch() is called
        self._handles: list[Any] = []

    @property
    def name(self) -> str:
        return str(self.settings["project_name"])

    @property
    def version(self) -> str:
        return self.run_id

    @property
    def should_stop(self) -> bool:
        """True once an anomaly of a `halt_on` type was found: end the loop."""
        return self.run is not None and self.run.should_stop

    def ensure_run(self, config: Optional[dict[str, Any]] = None) -> TrainingTracer:
        if self.run is None:
            return self.start_run(config, unfinished="Fabric training ended without finalize")
        return self.run

    def log_hyperparams(
        self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any
    ) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params or {})
        self.ensure_run({str(k): v for k, v in values.items()})

    def watch(self, model: Any, optimizer: Any) -> TrainingTracer:
        """Capture gradient health of a `fabric.setup` model at each optimizer step."""
        run = self.ensure_run()
        module = getattr(model, "module", model)  # a _FabricModule wraps the user's module
        inner = torch_optimizer(optimizer)  # a _FabricOptimizer wraps it too
        self.optimizer_steps = run.current_step
        run.watch(module, inner, capture_point=CAPTURE_POINT)
        self._handles = [
            inner.register_step_pre_hook(self._before_step),
            inner.register_step_post_hook(self._after_step),
        ]
        return run

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.active and self.run is not None and self.optimizer_steps is not None:
            self.run.log({}, step=self.optimizer_steps + 1)
            self.run.capture_gradients()
            self.run.skip_nonfinite_step(optimizer)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.optimizer_steps is not None:
            self.optimizer_steps += 1

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        run = self.ensure_run()
        values = scalar_metrics(metrics)[0]
        if not run.active or not values:
            return
        if step is not None:
            run.log(values, step=int(step))
        elif self.optimizer_steps is not None:
            run.log(values, step=self.optimizer_steps)
        else:
            run.log(values)
            run.step()

    def finalize(self, status: str) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        run = self.run
        if run is None or not run.active:
            return
        if status not in ("success", "finished"):
            run.finish(
                "failed",
                error=f"Fabric finalized the logger with status {status!r}",
                total_steps=self.optimizer_steps,
            )
            return
        total = self.optimizer_steps
        if total:
            run.log({}, step=total + 1)  # closes the last optimizer step with its capture
        self.end_run(total_steps=total)
