"""Tracer's plugin system: hook specifications, the manager and the built-in plugin list."""

from __future__ import annotations

from tracer.plugins.hookspecs import hookimpl, hookspec
from tracer.plugins.manager import get_plugin_manager, reset_plugin_manager

__all__ = ["get_plugin_manager", "hookimpl", "hookspec", "reset_plugin_manager"]
