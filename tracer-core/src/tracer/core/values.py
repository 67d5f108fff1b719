"""Checking of logged values on the training thread, kept to a few type checks per metric.

Plain `int` and `float` pass untouched. Tensors are detached (so no autograd graph stays
alive) but not read: the writer thread converts them, so a CUDA value never forces a host
sync on the training thread. numpy scalars and other real numbers become floats.
"""

from __future__ import annotations

import decimal
import numbers
from collections.abc import Mapping
from typing import Any


def check_metrics(metrics: Any) -> Mapping[str, Any]:
    """Validate a `log()` payload; returns it, or a converted copy. Raises before any change."""
    if type(metrics) is dict:  # the common case, kept to one C-level pass
        for key, value in metrics.items():
            if type(key) is not str or (type(value) is not float and type(value) is not int):
                break
        else:
            if "" not in metrics:
                return metrics
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"tracer.log() takes a dict of metric name -> number, got {type(metrics).__name__}"
        )
    converted: dict[str, Any] | None = None
    for key, value in metrics.items():
        if type(key) is not str:
            raise TypeError(f"metric names must be str, got {key!r} ({type(key).__name__})")
        value_type = type(value)
        if value_type is float or value_type is int:
            continue
        if not key:
            raise ValueError("metric names must not be empty")
        if converted is None:
            converted = dict(metrics)
        converted[key] = _coerce(key, value)
    if converted is None and "" in metrics:
        raise ValueError("metric names must not be empty")
    return metrics if converted is None else converted


def _coerce(key: str, value: Any) -> Any:
    module = type(value).__module__
    if module.startswith("torch"):
        return _coerce_tensor(key, value)
    if module == "numpy":
        return _coerce_numpy(key, value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        return float(value)
    raise TypeError(
        f"metric {key!r} is a {type(value).__name__} ({value!r:.40}); Tracer logs numbers:"
        " int, float, a one-element tensor or a numpy scalar"
    )


def _coerce_tensor(key: str, value: Any) -> Any:
    if not hasattr(value, "numel") or not hasattr(value, "detach"):
        raise TypeError(f"metric {key!r} is a {type(value).__name__}, not a number")
    count = value.numel()
    if count != 1:
        raise TypeError(
            f"metric {key!r} is a tensor with {count} elements; log a scalar such as"
            " tensor.mean(), or one metric per element"
        )
    if value.is_complex():
        raise TypeError(f"metric {key!r} is a complex tensor; log its real part or abs()")
    return value.detach()


def _coerce_numpy(key: str, value: Any) -> Any:
    size = getattr(value, "size", 1)
    if size != 1:
        raise TypeError(
            f"metric {key!r} is an array with {size} elements; log a scalar or one metric"
            " per element"
        )
    kind = getattr(getattr(value, "dtype", None), "kind", "f")
    if kind not in "biuf":
        raise TypeError(f"metric {key!r} has numpy dtype {value.dtype}, not a real number")
    return float(value.item() if hasattr(value, "item") else value)
