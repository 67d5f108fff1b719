"""The process-wide plugin manager, built on first use (never at import time).

Environment switches:
- `TRACER_DISABLE_PLUGIN_AUTOLOAD=1`: load no third-party plugins from entry points.
- `TRACER_BLOCK_PLUGINS=name1,name2`: skip those entry-point names (or built-in module names).
- `TRACER_TRACE_HOOKS=1`: log every hook call and its result at DEBUG on `tracer.hooks`.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import pluggy

from tracer.plugins import hookspecs
from tracer.storage import registry as storage_registry

if TYPE_CHECKING:
    from tracer.capture.collector import CollectorFactory
    from tracer.detection.base import Detector
    from tracer.handles import RunHandle
    from tracer.records import AnomalyWrite
    from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)
hook_trace_logger = logging.getLogger("tracer.hooks")

ENTRY_POINT_GROUP = "tracer.plugins"
DISABLE_AUTOLOAD_ENV = "TRACER_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "TRACER_BLOCK_PLUGINS"
TRACE_ENV = "TRACER_TRACE_HOOKS"

_TRUE = {"1", "true", "yes", "on"}


class Registry:
    """What a registration hook collected: name -> registered object, names unique."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Any] = {}

    def add(self, name: str, value: Any) -> None:
        known = self.entries.get(name)
        if known is not None and known is not value:
            raise ValueError(
                f"{self.kind} {name!r} registered twice: {getattr(known, '__qualname__', known)}"
                f" and {getattr(value, '__qualname__', value)}"
            )
        self.entries[name] = value


class TracerPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registries Tracer's registration hooks fill."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._registries: dict[str, Registry] = {}
        self._failed_hooks: set[str] = set()

    def _registry(self, kind: str, hook: str, adapt: Callable[[Registry], Any]) -> Registry:
        """Call a registration hook once; `adapt` turns the registry into its `register`."""
        registry = self._registries.get(kind)
        if registry is None:
            registry = Registry(kind)
            getattr(self.hook, hook)(register=adapt(registry))
            self._registries[kind] = registry
        return registry

    def storage_backends(self) -> dict[str, type[StorageBackend]]:
        """Storage backend classes by URL scheme (lower case)."""
        return self._registry(
            "storage scheme",
            "tracer_register_storage",
            lambda registry: lambda scheme, backend: registry.add(scheme.lower(), backend),
        ).entries

    def collector_factories(self) -> dict[str, CollectorFactory]:
        """Collector factories by name."""
        return self._registry(
            "collector", "tracer_register_collectors", lambda registry: registry.add
        ).entries

    def detector_classes(self) -> dict[str, type[Detector]]:
        """Detector classes by their `name`."""

        def adapt(registry: Registry) -> Callable[[type[Detector]], None]:
            def register(detector: type[Detector]) -> None:
                if not detector.name:
                    raise ValueError(f"detector {detector.__qualname__} has no name")
                registry.add(detector.name, detector)

            return register

        return self._registry("detector", "tracer_register_detectors", adapt).entries

    # -- registration after the registries were built -------------------------------------
    def register(self, plugin: object, name: Optional[str] = None) -> Optional[str]:
        """Register a plugin; the registries are rebuilt on next use, so a plugin registered
        after the first run (`get_plugin_manager().register(...)`) is still seen."""
        registered = super().register(plugin, name)
        self._registries.clear()
        return registered

    def unregister(self, plugin: Optional[object] = None, name: Optional[str] = None) -> Any:
        unregistered = super().unregister(plugin, name)
        self._registries.clear()
        return unregistered

    # -- lifecycle hooks: one typed method each, so callers are checked ---------------------
    def run_started(self, run: RunHandle) -> None:
        self._call_safely("tracer_run_start", lambda: self.hook.tracer_run_start(run=run))

    def anomaly_found(self, run: RunHandle, anomaly: AnomalyWrite) -> None:
        self._call_safely(
            "tracer_anomaly", lambda: self.hook.tracer_anomaly(run=run, anomaly=anomaly)
        )

    def checkpoint_written(self, run: RunHandle, step: int, reason: str) -> None:
        self._call_safely(
            "tracer_checkpoint_written",
            lambda: self.hook.tracer_checkpoint_written(run=run, step=step, reason=reason),
        )

    def run_ended(self, run: RunHandle, status: str) -> None:
        self._call_safely(
            "tracer_run_end", lambda: self.hook.tracer_run_end(run=run, status=status)
        )

    def _call_safely(self, name: str, call: Callable[[], object]) -> None:
        """A plugin's exception is logged once per hook, never raised into training."""
        try:
            call()
        except Exception:
            if name not in self._failed_hooks:
                self._failed_hooks.add(name)
                logger.exception("A Tracer plugin failed in %s; training goes on.", name)


_manager: Optional[TracerPluginManager] = None
_lock = threading.Lock()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _build() -> TracerPluginManager:
    manager = TracerPluginManager()
    blocked = {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}
    for name in blocked:
        manager.set_blocked(name)
    builtins = importlib.import_module("tracer.plugins.builtins")  # imports every floor below
    for name, plugin in builtins.BUILTIN_PLUGINS.items():
        if name not in blocked:
            manager.register(plugin, name=name)
    if not _env_flag(DISABLE_AUTOLOAD_ENV):
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.check_pending()
    if _env_flag(TRACE_ENV):
        manager.trace.root.setwriter(lambda message: hook_trace_logger.debug(message.rstrip()))
        manager.enable_tracing()
    return manager


def get_plugin_manager() -> TracerPluginManager:
    """The shared manager; built (plugins loaded, hooks validated) on the first call."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = _build()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next use rebuilds it (tests; after changing the env switches)."""
    global _manager
    with _lock:
        _manager = None


# The storage floor opens backends through this layer's registrations, installed here so
# that it never has to import the plugin manager (see tracer.storage.registry).
storage_registry.install_lookup(lambda: get_plugin_manager().storage_backends())
