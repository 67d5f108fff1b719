"""The hooks Tracer calls. Only this module declares hooks; every one is prefixed `tracer_`.

Hooks are for registration and rare lifecycle events, never for the per-step path. Implement
one with `@tracer.hookimpl` in a module exposed through the `tracer.plugins` entry-point group:

    [project.entry-points."tracer.plugins"]
    my_backend = "my_package.tracer_plugin"

A lifecycle hook that raises is logged once and never reaches the training loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from tracer.capture.collector import CollectorFactory
    from tracer.detection.base import Detector
    from tracer.handles import RunHandle
    from tracer.records import AnomalyWrite
    from tracer.storage.base import StorageBackend

PROJECT_NAME = "tracer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterStorage(Protocol):
    def __call__(self, scheme: str, backend: type[StorageBackend]) -> None: ...


@hookspec
def tracer_register_storage(register: RegisterStorage) -> None:
    """Register storage backends by URL scheme: `register("s3", S3Storage)`.

    Called once per process, when storage is first opened (the first `tracer.init`,
    `StorageBackend(config)` or query); in a distributed job only rank 0's runs open storage,
    the other ranks' followers write nothing. A `storage_path` such as
    `s3://bucket/prefix` then opens `S3Storage(config)` for a run, and
    `S3Storage.from_location(url)` for a reader (by default `S3Storage` with a config that
    holds only that `storage_path`). A plain path selects the built-in SQLite backend (scheme
    "sqlite"); registering a scheme twice is an error. A plugin registered after the first
    lookup (`get_plugin_manager().register(...)`) is seen by the next one.
    """


class RegisterCollector(Protocol):
    def __call__(self, name: str, factory: CollectorFactory) -> None: ...


@hookspec
def tracer_register_collectors(register: RegisterCollector) -> None:
    """Register collectors by name: `register("my_probe", factory)`.

    Called once per process, when the first run starts, on every rank. For each run,
    `factory(run)` is called in `tracer.init` on the process that writes the run (rank 0;
    other ranks only capture gradients for their summaries) and returns a
    `tracer.capture.Collector` (or None to sit this run out). A collector can add per-step
    series and its own section of every checkpoint; see `tracer.capture.collector`. Names
    must be unique.
    """


class RegisterDetector(Protocol):
    def __call__(self, detector: type[Detector]) -> None: ...


@hookspec
def tracer_register_detectors(register: RegisterDetector) -> None:
    """Register detector classes: `register(MyDetector)` (a `tracer.detection.Detector`).

    Called once per process, when detectors are first needed (the first `tracer.init`, or an
    `AnomalyDetector`), on every rank. A detector is built per run, with its settings from
    `TracerConfig.detectors[MyDetector.name]`, and runs both online (on the writer thread)
    and offline. Names must be unique.
    """


@hookspec
def tracer_anomaly(run: RunHandle, anomaly: AnomalyWrite) -> None:
    """An anomaly episode was found, or grew more severe, and is stored.

    Called on the run's writer thread right after the flush that stored it commits: once when
    an episode opens (while the run trains, or when the detectors report it as the run ends),
    and again if its severity rises (`anomaly["severity"]` is then the new one); never for
    offline detection. Keep it quick: alerts, not analysis.
    """


@hookspec
def tracer_run_start(run: RunHandle) -> None:
    """A run was created or resumed: called in `tracer.init`, before it returns.

    Runs on the process that writes the run (rank 0 in distributed jobs). `run.run_id`,
    `run.run_name` and `run.config` are set; nothing has been logged yet for a new run.
    """


@hookspec
def tracer_checkpoint_written(run: RunHandle, step: int, reason: str) -> None:
    """A checkpoint snapshot is durable in storage.

    Called on the run's background writer thread (the training thread when `async_writes`
    is False) right after the flush that contains it commits. `reason` is "interval",
    "early" (step 10 of a fresh run, before the first interval one), "anomaly" or "finish".
    Keep it quick: it delays the next flush.
    """


@hookspec
def tracer_run_end(run: RunHandle, status: str) -> None:
    """A run ended with `status` ("finished", "failed" or "killed"); all its data is flushed.

    Called once per run from `finish()`, the context manager, the atexit handler or the
    SIGTERM handler, on the thread that ended it, on the process that writes the run (rank 0
    in distributed jobs).
    """
