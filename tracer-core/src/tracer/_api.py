"""The module-level API (`tracer.init/log/step/finish`), acting on the current run.

Kept free of heavy imports: `import tracer` must not pull in pydantic, SQLite or torch; the
first `init()` does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tracer.core.tracer import TrainingTracer

logger = logging.getLogger("tracer")

_current: Optional[TrainingTracer] = None

_NOT_INITIALIZED = "Tracer is not initialized: call tracer.init(project=...) before {}()"


def init(project: str, run_name: Optional[str] = None, **kwargs: Any) -> TrainingTracer:
    """Start a run and make it the current one; see `TracerConfig` for the keyword arguments.

    A run that is still open is finished first, with a warning.
    """
    global _current
    from tracer.config import TracerConfig
    from tracer.core.tracer import TrainingTracer

    config = TracerConfig(project_name=project, run_name=run_name, **kwargs)
    previous = _current
    if previous is not None and previous.active:
        logger.warning(
            "tracer.init() called while run %s (%r) is open; finishing it first.",
            previous.run_id,
            previous.run_name,
        )
        previous.finish()
    _current = None
    _current = TrainingTracer(config)
    return _current


def get_run() -> Optional[TrainingTracer]:
    """The current run, or None before `init()` and after `finish()`."""
    return _current


def log(metrics: dict[str, Any], step: Optional[int] = None) -> None:
    """Log metrics to the current run; RuntimeError if there is none."""
    run = _current
    if run is None:
        raise RuntimeError(_NOT_INITIALIZED.format("tracer.log"))
    run.log(metrics, step)


def step() -> None:
    """Close the current step of the current run; RuntimeError if there is none."""
    run = _current
    if run is None:
        raise RuntimeError(_NOT_INITIALIZED.format("tracer.step"))
    run.step()


def watch(model: Any, optimizer: Optional[Any] = None) -> None:
    """Track gradient health of `model` in the current run; RuntimeError if there is none."""
    run = _current
    if run is None:
        raise RuntimeError(_NOT_INITIALIZED.format("tracer.watch"))
    run.watch(model, optimizer)


def record_model_save(path: str, step: Optional[int] = None) -> None:
    """Note a saved model checkpoint in the current run (see `TrainingTracer.record_model_save`)."""
    run = _current
    if run is None:
        raise RuntimeError(_NOT_INITIALIZED.format("tracer.record_model_save"))
    run.record_model_save(path, step)


def finish(status: str = "finished") -> None:
    """Finish the current run. Without one (never started, or finished) it does nothing."""
    global _current
    run = _current
    if run is None:
        return
    _current = None
    run.finish(status)
