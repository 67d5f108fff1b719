"""The dashboard's JSON encoding: `tracer.analysis.encode`, shared with the report."""

from __future__ import annotations

from tracer.analysis.encode import dumps, marked, nulled, number, numbers, spelled

__all__ = ["dumps", "marked", "nulled", "number", "numbers", "spelled"]
