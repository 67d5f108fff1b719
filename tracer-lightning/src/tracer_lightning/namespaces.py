"""The Lightning namespaces installed: `lightning.pytorch` and/or `pytorch_lightning`.

Both ship their own `Callback` and `Logger` base classes, and a Trainer of one namespace only
accepts callbacks of its own in some code paths (`isinstance` checks). Tracer's classes derive
from the bases of every installed namespace, so one implementation serves both.
"""

from __future__ import annotations

import importlib
from typing import Any

NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


def installed() -> list[Any]:
    """The importable namespace modules, `lightning.pytorch` first."""
    modules = []
    for name in NAMESPACES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    if not modules:
        raise ImportError(
            "tracer-lightning needs Lightning: pip install lightning (or pytorch-lightning)"
        )
    return modules


def bases(attribute: str) -> tuple[type, ...]:
    """`Callback` or `loggers.Logger` of every installed namespace."""
    found = []
    for module in installed():
        target: Any = module
        for part in attribute.split("."):
            target = (
                getattr(target, part)
                if hasattr(target, part)
                else importlib.import_module(f"{target.__name__}.{part}")
            )
        found.append(target)
    return tuple(found)
