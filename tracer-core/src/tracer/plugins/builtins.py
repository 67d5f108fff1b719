"""The plugins that ship with tracer-core, registered from this one tuple before third parties."""

from __future__ import annotations

BUILTIN_PLUGINS: tuple[str, ...] = (
    "tracer.storage.sqlite.plugin",
    "tracer.capture.plugin",
    "tracer.detection.plugin",
)
