"""The Lightning namespaces installed: `lightning.pytorch` and/or `pytorch_lightning`.

Both ship their own `Callback` and `Logger` base classes, and a Trainer of one namespace only
accepts callbacks of its own in some code paths (`isinstance` checks). Tracer's classes derive
from the bases of every installed namespace, so one implementation serves both.

Importing a namespace re-points `lightning_utilities`' rank-zero logger at that namespace's
logger (the one Lightning's console messages go through). Tracer imports both, and must not
move where the user's Lightning logs: it puts the rank-zero logger back as it found it when a
namespace was imported before, else as the first namespace (`lightning.pytorch`) sets it, as
`import lightning` alone would. So `logging.getLogger("lightning.pytorch").setLevel(...)`
keeps silencing Lightning.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
_RANK_ZERO = "lightning_utilities.core.rank_zero"


def installed() -> list[Any]:
    """The importable namespace modules, `lightning.pytorch` first."""
    rank_zero: Any = importlib.import_module(_RANK_ZERO)
    already = any(name in sys.modules for name in NAMESPACES)
    console = rank_zero.log
    modules = []
    for name in NAMESPACES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
        if not already:  # the first namespace Tracer imports sets it, as a user's import would
            already = True
            console = rank_zero.log
    rank_zero.log = console
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


def rank_zero_experiment(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lightning's decorator for a logger's `experiment`: the real one on rank zero, Lightning's
    dummy (every call a no-op) on the other ranks."""
    module = importlib.import_module(f"{installed()[0].__name__}.loggers.logger")
    decorated: Callable[..., Any] = module.rank_zero_experiment(fn)
    return decorated
