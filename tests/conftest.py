"""Every test runs in its own working directory with Tracer's environment switches cleared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tracer
from tracer.plugins import reset_plugin_manager

_TRACER_ENV = (
    "TRACER_MODE",
    "TRACER_STORAGE_PATH",
    "TRACER_DISABLE_PLUGIN_AUTOLOAD",
    "TRACER_BLOCK_PLUGINS",
    "TRACER_TRACE_HOOKS",
    "TRACER_WEBHOOK_URL",
    "TRACER_DASHBOARD_URL",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """cwd = a fresh tmp dir (so the default ./.tracer lands there); no run left open after."""
    monkeypatch.chdir(tmp_path)
    for name in _TRACER_ENV:
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    tracer.finish()
    reset_plugin_manager()
