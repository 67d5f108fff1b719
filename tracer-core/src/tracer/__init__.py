"""Tracer: training observability for PyTorch, into a local SQLite file.

    import tracer
    tracer.init(project="my-project")
    for batch in loader:
        ...
        tracer.log({"loss": loss})
        tracer.step()
    tracer.finish()

Importing this package is cheap: it loads no torch, no framework and no plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracer._api import finish, get_run, init, log, record_model_save, step, watch
from tracer.version import __version__ as __version__

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.core.tracer import TrainingTracer
    from tracer.exceptions import TrainingHalted
    from tracer.plugins.hookspecs import hookimpl

__all__ = [
    "TracerConfig",
    "TrainingHalted",
    "TrainingTracer",
    "finish",
    "get_run",
    "hookimpl",
    "init",
    "log",
    "record_model_save",
    "step",
    "watch",
]

_LAZY = {
    "TracerConfig": "tracer.config",
    "TrainingTracer": "tracer.core.tracer",
    "hookimpl": "tracer.plugins.hookspecs",
    "TrainingHalted": "tracer.exceptions",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tracer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
