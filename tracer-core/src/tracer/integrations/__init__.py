"""Framework integrations, resolved lazily from their own distributions.

    from tracer.integrations import TransformersCallback   # pip install 'tracer-core[hf]'
    from tracer.integrations import LightningCallback      # pip install 'tracer-core[lightning]'
    from tracer.integrations import AccelerateTracker      # pip install 'tracer-core[accelerate]'

Nothing is imported until a name is used, so `import tracer.integrations` stays cheap and
works with no framework installed.

For writing an adapter: `TracerAdapter`, `scalar_metrics` and `RunNotFoundError`
(`tracer.integrations.adapter`) give every adapter the same inner shape; see ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> (module that defines it, extra that installs it)
_ADAPTERS: dict[str, tuple[str, str]] = {
    "TransformersCallback": ("tracer_hf", "hf"),
    "LightningCallback": ("tracer_lightning", "lightning"),
    "TracerLogger": ("tracer_lightning", "lightning"),
    "TracerFabricLogger": ("tracer_lightning", "lightning"),
    "AccelerateTracker": ("tracer_accelerate", "accelerate"),
}

# public name -> the tracer-core module that defines it (the adapter base)
_CORE: dict[str, str] = {
    "TracerAdapter": "tracer.integrations.adapter",
    "scalar_metrics": "tracer.integrations.adapter",
    "RunNotFoundError": "tracer.integrations.adapter",
}

__all__ = sorted([*_ADAPTERS, *_CORE])


def __getattr__(name: str) -> Any:
    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name]), name)
        globals()[name] = value
        return value
    try:
        module_name, extra = _ADAPTERS[name]
    except KeyError:
        raise AttributeError(f"module 'tracer.integrations' has no attribute {name!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if error.name not in (module_name, None):
            raise  # the adapter is installed but one of its own imports failed: show that
        raise ImportError(
            f"{name} lives in the {module_name.replace('_', '-')} package; install it with"
            f" pip install 'tracer-core[{extra}]' (or 'tracer-core[all]')",
            name=module_name,
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
