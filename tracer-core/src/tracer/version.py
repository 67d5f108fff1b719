"""Tracer's version, on the ground floor so any part (the report's footer, the CLI) can
name it without importing the whole package. Kept equal to tracer-core's pyproject version
(tests/core/test_packaging.py)."""

from __future__ import annotations

__version__ = "0.1.0"
