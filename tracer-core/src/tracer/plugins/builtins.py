"""The plugins that ship with tracer-core, in one place: the SQLite backend, the built-in
collectors and detectors, and the anomaly actions (`tracer.actions`), registered before any
third party's.

The manager imports this module when it is first built (never at `import tracer`). Each
plugin keeps the name it had when it lived in its own package, so `TRACER_BLOCK_PLUGINS`
settings written for those names still work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer.actions.webhook import Webhooks
from tracer.capture.builtin import BUILTIN_COLLECTORS
from tracer.detection.builtin import BUILTIN_DETECTORS
from tracer.plugins.hookspecs import (
    RegisterCollector,
    RegisterDetector,
    RegisterStorage,
    hookimpl,
)
from tracer.storage.sqlite.backend import SQLiteStorage

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import AnomalyWrite


class SQLitePlugin:
    """The default backend, for the `sqlite://` scheme and for plain paths."""

    @hookimpl
    def tracer_register_storage(self, register: RegisterStorage) -> None:
        register("sqlite", SQLiteStorage)


class CollectorsPlugin:
    @hookimpl
    def tracer_register_collectors(self, register: RegisterCollector) -> None:
        for name, factory in BUILTIN_COLLECTORS.items():
            register(name, factory)


class DetectorsPlugin:
    @hookimpl
    def tracer_register_detectors(self, register: RegisterDetector) -> None:
        for detector in BUILTIN_DETECTORS:
            register(detector)


class WebhookPlugin:
    """Anomaly notifications for runs with a `webhook_url` (`tracer.actions.webhook`)."""

    def __init__(self) -> None:
        self.webhooks = Webhooks()

    @hookimpl
    def tracer_run_start(self, run: RunHandle) -> None:
        self.webhooks.run_started(run)

    @hookimpl
    def tracer_anomaly(self, run: RunHandle, anomaly: AnomalyWrite) -> None:
        self.webhooks.anomaly_found(run, anomaly)

    @hookimpl
    def tracer_run_end(self, run: RunHandle, status: str) -> None:
        self.webhooks.run_ended(run)


BUILTIN_PLUGINS: dict[str, object] = {
    "tracer.storage.sqlite.plugin": SQLitePlugin(),
    "tracer.capture.plugin": CollectorsPlugin(),
    "tracer.detection.plugin": DetectorsPlugin(),
    "tracer.actions.webhook": WebhookPlugin(),
}
