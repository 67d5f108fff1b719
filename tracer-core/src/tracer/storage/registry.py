"""Which backend class opens a location (a path or a URL), by the location's scheme; and
`open_storage`, the one door every part of Tracer opens storage through.

The table of backends is filled from above: the plugin layer installs it (`install_lookup`)
when it is imported, from what plugins register through `tracer_register_storage`. Storage
never imports the plugin layer; when nothing installed the table yet (a script that imports
only `tracer.storage`, as the seed API's `StorageBackend(config)` example does), the first
lookup loads that layer by name, which installs it. `import tracer` itself loads neither.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Optional, Union

from tracer.config import TracerConfig, mask_password
from tracer.exceptions import StorageError
from tracer.storage.base import StorageBackend

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
DEFAULT_SCHEME = "sqlite"

_backends: Optional[Callable[[], Mapping[str, type[StorageBackend]]]] = None

# Backends published by the Tracer project itself, by scheme: named when one is missing.
KNOWN_PACKAGES = {"postgresql": "tracer-postgres", "postgres": "tracer-postgres"}


def install_lookup(backends: Callable[[], Mapping[str, type[StorageBackend]]]) -> None:
    """Called by the plugin layer: `backends()` returns the registered classes by scheme."""
    global _backends
    _backends = backends


def scheme_of(storage_path: str) -> str:
    """`sqlite:///x` -> "sqlite"; a plain path (including `C:\\x`) -> the default, SQLite."""
    match = _SCHEME.match(storage_path)
    return match.group(1).lower() if match else DEFAULT_SCHEME


PLUGIN_LAYER = "tracer.plugins.manager"  # installs the table when imported


def backend_class_for(storage_path: str) -> type[StorageBackend]:
    if _backends is None:
        importlib.import_module(PLUGIN_LAYER)
    if _backends is None:
        raise StorageError(f"no storage backend is registered ({PLUGIN_LAYER} did not install any)")
    backends = _backends()
    scheme = scheme_of(storage_path)
    try:
        return backends[scheme]
    except KeyError:
        known = ", ".join(sorted(backends)) or "none"
        package = KNOWN_PACKAGES.get(scheme)
        hint = f"; pip install {package} adds it" if package else ""
        raise StorageError(
            f"no storage backend handles {scheme}:// (storage_path="
            f"{mask_password(storage_path)!r}); installed: {known}{hint}"
        ) from None


def open_storage(location: Union[str, TracerConfig], *, read_only: bool = False) -> StorageBackend:
    """Open the backend for `location`: a path or URL (how readers open a store, through
    `StorageBackend.from_location`), or a run's whole `TracerConfig` (how a run opens its own).
    `read_only` (a location only) opens it through `StorageBackend.open_reader`, which never
    writes: how the dashboard opens the store a run is writing."""
    if isinstance(location, TracerConfig):
        return backend_class_for(location.storage_path)(location)
    backend = backend_class_for(str(location))
    if read_only:
        return backend.open_reader(str(location))
    return backend.from_location(str(location))
