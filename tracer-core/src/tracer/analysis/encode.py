"""JSON for every view of a run (the dashboard's API, the report's embedded data): NaN and
+-Inf never appear as JSON numbers (JSON has none, and a browser's `JSON.parse` refuses
them). Where the JSON carries numbers that may be non-finite, they become `null` plus an
explicit marker naming the kind ("NaN", "+Inf", "-Inf"); free-form data (a run's config)
carries them as those strings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tracer.analysis.downsample import kind_of

logger = logging.getLogger(__name__)


def number(value: Any) -> Optional[float]:
    """A float for JSON, or None when it is missing or non-finite."""
    if value is None:
        return None
    number = float(value)
    return number if number - number == 0.0 else None


def numbers(values: Sequence[float]) -> list[Optional[float]]:
    """Floats for JSON, None where non-finite (one pass, no per-value calls)."""
    return [v if v - v == 0.0 else None for v in values]


def marked(fields: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """`fields` with the numbers `names` made JSON-safe, and a `nonfinite` marker
    `{name: kind}` for those that were NaN or +-Inf (empty when none were)."""
    out = dict(fields)
    nonfinite: dict[str, str] = {}
    for name in names:
        value = out.get(name)
        if isinstance(value, float) and value - value != 0.0:
            nonfinite[name] = kind_of(value)
            out[name] = None
    out["nonfinite"] = nonfinite
    return out


def spelled(value: Any) -> Any:
    """Free-form data (config values) with non-finite floats as "NaN", "+Inf" or "-Inf"."""
    if isinstance(value, float) and value - value != 0.0:
        return kind_of(value)
    if isinstance(value, Mapping):
        return {str(k): spelled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [spelled(v) for v in value]
    return value


def nulled(value: Any, path: tuple[Any, ...], found: list[list[Any]]) -> Any:
    """Nested lists of numbers (a batch sample) with non-finite floats as None; each one's
    index path and kind is appended to `found` as [i, j, ..., kind]."""
    if isinstance(value, float) and value - value != 0.0:
        found.append([*path, kind_of(value)])
        return None
    if isinstance(value, list):
        return [nulled(v, (*path, i), found) for i, v in enumerate(value)]
    return value


def _scrubbed(value: Any) -> Any:
    if isinstance(value, float) and value - value != 0.0:
        return None
    if isinstance(value, Mapping):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


def dumps(payload: Any) -> bytes:
    """Compact JSON. A non-finite number that slipped past the encoders above becomes null
    (and is logged) rather than invalid JSON."""
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"), default=str)
    except ValueError:
        logger.warning("a non-finite number reached the JSON encoder; sent as null")
        text = json.dumps(_scrubbed(payload), separators=(",", ":"), default=str)
    return text.encode("utf-8")
