"""The storage interface every backend implements (the records it exchanges are
`tracer.records`'s, re-exported here).

A backend is chosen by the scheme of `storage_path` (`sqlite://...`, or a plain path for the
SQLite default). Third-party backends subclass `StorageBackend` and register it through the
`tracer_register_storage` hook; `tracer.testing.StorageConformance` checks one.
"""

from __future__ import annotations

import abc
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Optional

from tracer.config import TracerConfig
from tracer.records import (  # re-exported: the names were defined here before
    RUN_STATUSES,
    TERMINAL_STATUSES,
    TIMESTAMP_METRIC,
    AnomalyWrite,
    CheckpointRecord,
    CheckpointWrite,
    EventRecord,
    EventWrite,
    MetricHistory,
    MetricSeries,
    MetricSummary,
    PointBatch,
    RunRecord,
    SampleRecord,
    SampleWrite,
    anomaly_record,
    checkpoint_write,
)
from tracer.storage.reduction import DEFAULT_POINTS, Reduced, reduce_points

READER_PROJECT = "reader"  # the project name of a config made only to open a location

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "AnomalyWrite",
    "CheckpointRecord",
    "CheckpointWrite",
    "EventRecord",
    "EventWrite",
    "MetricHistory",
    "MetricSeries",
    "MetricSummary",
    "PointBatch",
    "RunRecord",
    "SampleRecord",
    "SampleWrite",
    "StorageBackend",
    "anomaly_record",
    "checkpoint_write",
]


class StorageBackend(abc.ABC):
    """Where runs, metric histories and checkpoints live.

    `StorageBackend(config)` opens the backend that the scheme of `config.storage_path` selects
    (SQLite for a plain path). A subclass is constructed directly with its own arguments.
    Implementations must be safe to call from the training thread and the writer thread of the
    same run, and from several processes sharing one location.
    """

    # The class that opens a storage_path (`tracer.storage.registry.backend_class_for`, set
    # by the tracer.storage package): `StorageBackend(config)`, the seed API, opens through
    # it without this module importing the registry.
    _backend_for: ClassVar[Optional[Callable[[str], type[StorageBackend]]]] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> StorageBackend:
        if cls is StorageBackend:
            config = args[0] if args else kwargs.get("config")
            if config is None:
                raise TypeError("StorageBackend(config) needs a TracerConfig")
            lookup = StorageBackend._backend_for  # set by the tracer.storage package
            if lookup is None:
                raise TypeError("StorageBackend(config) needs the tracer.storage package")
            return super().__new__(lookup(config.storage_path))
        return super().__new__(cls)

    @abc.abstractmethod
    def __init__(self, config: TracerConfig) -> None: ...

    @classmethod
    def from_location(cls, location: str) -> StorageBackend:
        """Open this backend at `location` (a path or URL) without a run: how readers (queries,
        the report, the CLI) open a store. The default hands `__init__` a config that holds
        only the location, for backends that take a config; a backend that can open from the
        location alone overrides this (the SQLite one does)."""
        return cls(TracerConfig(project_name=READER_PROJECT, storage_path=location))

    @classmethod
    def open_reader(cls, location: str) -> StorageBackend:
        """Open `location` only to read it (the dashboard's way): no file or table is
        created, no schema migrated, nothing written; `StoreNotFoundError` when nothing was
        recorded there yet. The default is `from_location`, for
        backends whose readers never write; one that writes on opening overrides this (the
        SQLite one opens its file read-only)."""
        return cls.from_location(location)

    def local_directory(self) -> Optional[str]:
        """A directory on this machine that belongs to this store, where files kept beside it
        go (pinned checkpoints: `tracer.actions.pins`); None for a store that is not a local
        directory (the default), which then keeps no such files."""
        return None

    # -- runs -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_run(
        self,
        run_id: str,
        project_name: str,
        run_name: str,
        start_time: float,
        config: Mapping[str, Any],
        *,
        tags: Sequence[str] = (),
        notes: Optional[str] = None,
        host: Optional[str] = None,
        pid: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        heartbeat_interval: Optional[float] = None,
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Store a new run with status "running". A duplicate id or (project, name) raises.

        `settings` keeps Tracer's own settings that readers need (the detector settings, so
        offline detection judges the run as the online detectors did).
        """

    @abc.abstractmethod
    def update_run(self, run_id: str, **fields: Any) -> None:
        """Change some of: status, end_time, heartbeat, total_steps, error, pid, host, notes."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Optional[RunRecord]:
        """The run with this id, or None."""

    @abc.abstractmethod
    def list_runs(
        self,
        project_name: Optional[str] = None,
        *,
        status: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered (status is the effective status)."""

    @abc.abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Delete a run and everything recorded for it."""

    def rewind_run(self, run_id: str, after_step: int) -> None:
        """Delete what the run stored at steps after `after_step` (metric points, checkpoints,
        events, samples, anomaly episodes starting after it; episodes reaching past it end
        there) and lower `total_steps` to it. Called when a run is resumed from a checkpoint
        earlier than its last step: the steps after it are trained again, and what was stored
        for them the first time is an abandoned history. Optional: a backend without it
        raises NotImplementedError, and the resumed run then keeps those points (with a
        warning)."""
        raise NotImplementedError(f"{type(self).__name__} cannot rewind a run")

    # -- metrics ----------------------------------------------------------------------------
    @abc.abstractmethod
    def write_metrics(self, run_id: str, points: PointBatch) -> None:
        """Append points. A later write of the same (metric, step) replaces the earlier one."""

    @abc.abstractmethod
    def get_metric_timeseries(self, run_id: str, metric: str) -> MetricSeries:
        """Every stored point of one metric in step order; empty lists for an unknown metric."""

    def get_metric_arrays(self, run_id: str, metric: str) -> tuple[Sequence[int], Sequence[float]]:
        """The same history as `get_metric_timeseries`, as compact sequences (a backend may
        return a `range` and an `array`), for readers that scan millions of points."""
        series = self.get_metric_timeseries(run_id, metric)
        return series["steps"], series["values"]

    def get_metric_window(
        self, run_id: str, metric: str, start: Optional[int] = None, end: Optional[int] = None
    ) -> tuple[Sequence[int], Sequence[float]]:
        """The points of one metric with `start <= step <= end` (None: unbounded), in step
        order, as `get_metric_arrays` gives them: how the dashboard zooms into a long history.
        The default reads the whole history and cuts it by bisection; a backend that can read
        only the part overlapping the window overrides it (SQLite reads only those chunks)."""
        steps, values = self.get_metric_arrays(run_id, metric)
        low = 0 if start is None else bisect_left(steps, start)
        high = len(steps) if end is None else bisect_right(steps, end)
        return steps[low:high], values[low:high]

    def get_metric_reduced(
        self,
        run_id: str,
        metric: str,
        start: Optional[int] = None,
        end: Optional[int] = None,
        points: int = DEFAULT_POINTS,
    ) -> Reduced:
        """The window `get_metric_window` gives, reduced to about `points` points by the rule
        of `tracer.storage.reduction.reduce_points` (min and max per bucket, first and last,
        every NaN/Inf kept): what a chart draws. The default reads the window and reduces it
        here; a backend that keeps summaries of its chunks overrides it to read only what the
        reduction needs (PostgreSQL), and must return exactly what the default returns."""
        steps, values = self.get_metric_window(run_id, metric, start, end)
        return reduce_points(steps, values, points)

    @abc.abstractmethod
    def list_metrics(self, run_id: str) -> list[MetricSummary]:
        """One summary per metric of the run, by name."""

    def iter_metric_histories(
        self, run_ids: Sequence[str], metrics: Optional[Sequence[str]] = None
    ) -> Iterator[MetricHistory]:
        """The whole histories of many runs and metrics, one `MetricHistory` at a time, for
        the frame API (`QueryEngine.to_arrow`): runs in the order given, and within a run
        `_timestamp` first (so a reader can join wall times to what follows), then the other
        metrics by name (code point order); only `metrics` when given (every stored series,
        `_`-prefixed ones included, when None); a metric a run lacks is skipped. Yielding one
        history at a time keeps a reader's memory at its result plus one history.

        The default asks `list_metrics` and `get_metric_arrays` per run and metric; a backend
        that can stream every chunk in one query overrides it (SQLite does)."""
        wanted = None if metrics is None else set(metrics)
        for run_id in run_ids:
            names = [m["name"] for m in self.list_metrics(run_id)]
            chosen = [n for n in names if wanted is None or n in wanted]
            for name in sorted(chosen, key=_timestamp_first):
                steps, values = self.get_metric_arrays(run_id, name)
                if len(steps):
                    yield MetricHistory(run_id, name, steps, values)

    def metric_summaries(
        self, project_name: Optional[str] = None
    ) -> dict[str, list[MetricSummary]]:
        """`list_metrics` of every run at once, `{run_id: [...]}` (runs without metrics may be
        missing), optionally of one project's runs: for the runs table of a sweep, which must
        not cost a query per run. The default asks each run; SQLite answers in one query."""
        return {
            run["run_id"]: self.list_metrics(run["run_id"]) for run in self.list_runs(project_name)
        }

    def events_by_run(
        self, kind: str, project_name: Optional[str] = None
    ) -> dict[str, list[EventRecord]]:
        """`get_events(run, kind)` of every run at once, `{run_id: [...]}` in step order
        (runs without such events may be missing), optionally of one project's runs: how the
        runs table reads every run's "summary" events. The default asks each run; SQLite
        answers in one query."""
        found: dict[str, list[EventRecord]] = {}
        for run in self.list_runs(project_name):
            events = self.get_events(run["run_id"], kind)
            if events:
                found[run["run_id"]] = events
        return found

    # -- checkpoints ------------------------------------------------------------------------
    @abc.abstractmethod
    def write_checkpoint(
        self,
        run_id: str,
        step: int,
        timestamp: float,
        metrics: Mapping[str, float],
        gradient_stats: Mapping[str, Mapping[str, float]],
        system_metrics: Mapping[str, float],
        *,
        reason: str = "interval",
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Store a checkpoint snapshot."""

    @abc.abstractmethod
    def get_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """Checkpoints of a run in step order."""

    # -- events and samples -----------------------------------------------------------------
    @abc.abstractmethod
    def write_events(self, run_id: str, events: Sequence[EventWrite]) -> None:
        """Store events (several per step and kind are allowed)."""

    @abc.abstractmethod
    def get_events(self, run_id: str, kind: Optional[str] = None) -> list[EventRecord]:
        """Events of a run in step order (then write order), optionally of one kind."""

    @abc.abstractmethod
    def write_samples(self, run_id: str, samples: Sequence[SampleWrite]) -> None:
        """Store batch samples."""

    @abc.abstractmethod
    def get_samples(self, run_id: str, step: Optional[int] = None) -> list[SampleRecord]:
        """Samples of a run (or of one step) in step order, then write order."""

    # -- anomalies --------------------------------------------------------------------------
    @abc.abstractmethod
    def write_anomalies(self, anomalies: Sequence[AnomalyWrite]) -> int:
        """Store anomaly episodes; returns how many were new (run, type, step and subject not
        stored yet). For a key already stored, the episode's progress is updated: `end_step`
        and `count` only grow, `open` takes the written value, `severity` rises to the
        written one when that is worse; the other fields stay as first written."""

    @abc.abstractmethod
    def get_anomalies(
        self, run_id: str, anomaly_types: Optional[Sequence[str]] = None
    ) -> list[AnomalyWrite]:
        """Anomalies of a run in step order, optionally only of some types."""

    def anomaly_counts(self, project_name: Optional[str] = None) -> dict[str, dict[str, int]]:
        """Anomaly episodes per run and severity, `{run_id: {"critical": n, ...}}` (runs
        without anomalies may be missing), optionally of one project's runs: for listings
        that show every run and must not read each run's data. The default asks each run;
        SQLite answers in one query."""
        counts: dict[str, dict[str, int]] = {}
        for run in self.list_runs(project_name):
            for anomaly in self.get_anomalies(run["run_id"]):
                by_severity = counts.setdefault(run["run_id"], {})
                by_severity[anomaly["severity"]] = by_severity.get(anomaly["severity"], 0) + 1
        return counts

    # -- batching and lifetime --------------------------------------------------------------
    def write_batch(
        self,
        run_id: str,
        points: PointBatch,
        checkpoints: Sequence[CheckpointWrite] = (),
        run_fields: Optional[Mapping[str, Any]] = None,
        events: Sequence[EventWrite] = (),
        samples: Sequence[SampleWrite] = (),
        anomalies: Sequence[AnomalyWrite] = (),
    ) -> None:
        """One flush of the background writer. Backends with transactions make it atomic."""
        if anomalies:
            self.write_anomalies(anomalies)
        if points:
            self.write_metrics(run_id, points)
        for checkpoint in checkpoints:
            self.write_checkpoint(run_id, **checkpoint)
        if events:
            self.write_events(run_id, events)
        if samples:
            self.write_samples(run_id, samples)
        if run_fields:
            self.update_run(run_id, **run_fields)

    def close(self) -> None:  # noqa: B027 (optional: backends without connections skip it)
        """Release connections. Safe to call twice."""


def _timestamp_first(name: str) -> tuple[bool, str]:
    """The order `iter_metric_histories` yields a run's metrics in."""
    return (name != TIMESTAMP_METRIC, name)
