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
from typing import TYPE_CHECKING, Any, Optional

import pluggy

from tracer.plugins import hookspecs
from tracer.plugins.builtins import BUILTIN_PLUGINS

if TYPE_CHECKING:
    from tracer.capture.collector import CollectorFactory
    from tracer.detection.base import Detector
    from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)
hook_trace_logger = logging.getLogger("tracer.hooks")

ENTRY_POINT_GROUP = "tracer.plugins"
DISABLE_AUTOLOAD_ENV = "TRACER_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "TRACER_BLOCK_PLUGINS"
TRACE_ENV = "TRACER_TRACE_HOOKS"

_TRUE = {"1", "true", "yes", "on"}


class TracerPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registries Tracer's registration hooks fill."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._storage_backends: Optional[dict[str, type[StorageBackend]]] = None
        self._collector_factories: Optional[dict[str, CollectorFactory]] = None
        self._detector_classes: Optional[dict[str, type[Detector]]] = None
        self._failed_hooks: set[str] = set()

    def storage_backends(self) -> dict[str, type[StorageBackend]]:
        if self._storage_backends is None:
            backends: dict[str, type[StorageBackend]] = {}

            def register(scheme: str, backend: type[StorageBackend]) -> None:
                scheme = scheme.lower()
                if scheme in backends and backends[scheme] is not backend:
                    raise ValueError(
                        f"storage scheme {scheme!r} registered twice: "
                        f"{backends[scheme].__qualname__} and {backend.__qualname__}"
                    )
                backends[scheme] = backend

            self.hook.tracer_register_storage(register=register)
            self._storage_backends = backends
        return self._storage_backends

    def collector_factories(self) -> dict[str, CollectorFactory]:
        if self._collector_factories is None:
            factories: dict[str, CollectorFactory] = {}

            def register(name: str, factory: CollectorFactory) -> None:
                if name in factories and factories[name] is not factory:
                    raise ValueError(f"collector {name!r} registered twice")
                factories[name] = factory

            self.hook.tracer_register_collectors(register=register)
            self._collector_factories = factories
        return self._collector_factories

    def detector_classes(self) -> dict[str, type[Detector]]:
        if self._detector_classes is None:
            classes: dict[str, type[Detector]] = {}

            def register(detector: type[Detector]) -> None:
                name = detector.name
                if not name:
                    raise ValueError(f"detector {detector.__qualname__} has no name")
                if name in classes and classes[name] is not detector:
                    raise ValueError(f"detector {name!r} registered twice")
                classes[name] = detector

            self.hook.tracer_register_detectors(register=register)
            self._detector_classes = classes
        return self._detector_classes

    def call_lifecycle_hook(self, name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook; a plugin's exception is logged once per hook, never raised."""
        try:
            getattr(self.hook, name)(**kwargs)
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
    for module_name in BUILTIN_PLUGINS:
        if module_name not in blocked:
            manager.register(importlib.import_module(module_name), name=module_name)
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
