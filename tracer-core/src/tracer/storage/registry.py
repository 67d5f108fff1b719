"""Map the scheme of a `storage_path` to the backend class that plugins registered for it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tracer.exceptions import StorageError

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.storage.base import StorageBackend

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
DEFAULT_SCHEME = "sqlite"


def scheme_of(storage_path: str) -> str:
    """`sqlite:///x` -> "sqlite"; a plain path (including `C:\\x`) -> the default, SQLite."""
    match = _SCHEME.match(storage_path)
    return match.group(1).lower() if match else DEFAULT_SCHEME


def backend_class_for(storage_path: str) -> type[StorageBackend]:
    from tracer.plugins.manager import get_plugin_manager

    backends = get_plugin_manager().storage_backends()
    scheme = scheme_of(storage_path)
    try:
        return backends[scheme]
    except KeyError:
        known = ", ".join(sorted(backends)) or "none"
        raise StorageError(
            f"no storage backend handles {scheme}:// (storage_path={storage_path!r}); "
            f"installed: {known}"
        ) from None


def open_storage(config: TracerConfig) -> StorageBackend:
    """Open the backend selected by `config.storage_path`."""
    return backend_class_for(config.storage_path)(config)
