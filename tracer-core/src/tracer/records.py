"""The record vocabulary: the shapes of what a run produces and storage keeps.

The ground floor: storage backends, detectors, collectors, the run and readers all speak in
these records, and this module imports nothing of Tracer's, so none of them needs another to
name what it exchanges. `tracer.storage.base` re-exports them for code written before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional, TypedDict

RUN_STATUSES = ("running", "finished", "failed", "killed", "crashed")
TERMINAL_STATUSES = ("finished", "failed", "killed", "crashed")
# How serious an anomaly is, least first: detectors report one of these, settings that pick
# anomalies by severity (`pin_on`) compare by this order.
SEVERITIES = ("info", "warning", "critical")
# The series holding each step's wall time (seconds since the epoch), written by the run's
# writer beside the user's metrics; readers join it to every metric's steps.
TIMESTAMP_METRIC = "_timestamp"


def severity_rank(severity: str) -> int:
    """Position in `SEVERITIES`, higher is worse; a severity outside the vocabulary (a
    third-party detector's own word) ranks below all of them."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


class RunRecord(TypedDict):
    """One run as stored. `status` is the effective one: a dead "running" run reads "crashed"."""

    run_id: str
    project_name: str
    run_name: str
    status: str
    tags: list[str]
    notes: Optional[str]
    config: dict[str, Any]
    start_time: float
    end_time: Optional[float]
    heartbeat: Optional[float]
    heartbeat_interval: Optional[float]
    host: Optional[str]
    pid: Optional[int]
    rank: int
    world_size: int
    total_steps: int
    error: Optional[str]
    settings: dict[str, Any]


class CheckpointWrite(TypedDict):
    """A snapshot: latest metrics, per-layer gradient statistics and system metrics at a step.

    `reason` says why it was taken: "interval" (every `checkpoint_interval` steps), "early"
    (the one at step 10 of a fresh run, when that comes before the first interval one) or
    "finish".
    `extra` holds sections added by third-party collectors, by collector name.
    """

    step: int
    timestamp: float
    reason: str
    metrics: dict[str, float]
    gradient_stats: dict[str, dict[str, float]]
    system_metrics: dict[str, float]
    extra: dict[str, Any]


def checkpoint_write(
    step: int,
    timestamp: float,
    metrics: Mapping[str, float],
    gradient_stats: Mapping[str, Mapping[str, float]],
    system_metrics: Mapping[str, float],
    *,
    reason: str = "interval",
    extra: Optional[Mapping[str, Any]] = None,
) -> CheckpointWrite:
    """The `CheckpointWrite` that `StorageBackend.write_checkpoint`'s arguments describe, with
    its own copies of the sections (a backend turns the one call into its batched write)."""
    return {
        "step": step,
        "timestamp": timestamp,
        "reason": reason,
        "metrics": dict(metrics),
        "gradient_stats": {name: dict(stats) for name, stats in gradient_stats.items()},
        "system_metrics": dict(system_metrics),
        "extra": dict(extra or {}),
    }


class CheckpointRecord(CheckpointWrite):
    """A stored checkpoint, as read back."""

    run_id: str


class EventWrite(TypedDict):
    """Something that happened at a step: "nonfinite_gradients", "optimizer_step_skipped",
    "gradients_missing" (the optimizer stepped, no parameter had a gradient),
    "gradient_capture" (which capture point a watched model uses), framework events."""

    step: int
    kind: str
    data: dict[str, Any]


class EventRecord(EventWrite):
    run_id: str


class SampleWrite(TypedDict):
    """The first rows of one input or output tensor of the batch trained on at `step`."""

    step: int
    reason: str
    role: str  # "input" or "output"
    name: str
    shape: list[int]
    dtype: str
    values: list[Any]
    truncated: bool


class SampleRecord(SampleWrite):
    run_id: str


class AnomalyWrite(TypedDict):
    """An anomaly episode as stored: one per (run, type, step, subject), `step` being where it
    started. Writing the same key again updates the episode's progress (see
    `StorageBackend.write_anomalies`)."""

    run_id: str
    step: int
    anomaly_type: str
    severity: str
    subject: str
    value: float
    baseline: float
    threshold: float
    message: str
    detector: str
    end_step: int  # the last step the condition was seen at (= step for a one-step episode)
    count: int  # observations the episode spans
    open: bool  # the condition may still be going on (False once the run has ended)
    hint: str  # one line: what to try


def anomaly_record(run_id: str, row: Sequence[Any]) -> AnomalyWrite:
    """An anomaly as every backend hands it back, from a row of (step, anomaly_type, severity,
    subject, value, baseline, threshold, message, detector, end_step, count, open, hint): a
    NULL value, baseline or threshold (a column without NaN) reads as NaN."""
    return {
        "run_id": run_id,
        "step": int(row[0]),
        "anomaly_type": row[1],
        "severity": row[2],
        "subject": row[3],
        "value": _nan_if_null(row[4]),
        "baseline": _nan_if_null(row[5]),
        "threshold": _nan_if_null(row[6]),
        "message": row[7],
        "detector": row[8],
        "end_step": int(row[9]),
        "count": int(row[10]),
        "open": bool(row[11]),
        "hint": row[12],
    }


def _nan_if_null(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


class MetricSeries(TypedDict):
    """A metric's history in step order; `values` may hold NaN and +-Inf."""

    steps: list[int]
    values: list[float]


class MetricSummary(TypedDict):
    """Aggregates kept up to date on write, so summaries never scan a long history."""

    name: str
    count: int
    last_step: int
    last_value: float
    min_value: float
    max_value: float


class MetricHistory(NamedTuple):
    """One metric's whole history in one run, as the frame readers stream it
    (`StorageBackend.iter_metric_histories`): steps ascending (a `range` or an int64 `array`),
    values a float64 sequence (an `array("d")` from the built-in backends, whose buffer Arrow
    takes without a copy), NaN and +-Inf bit for bit."""

    run_id: str
    metric: str
    steps: Sequence[int]
    values: Sequence[float]


# One flush of the writer: {metric: (steps, values)}; steps ascend within a batch.
PointBatch = Mapping[str, tuple[Sequence[int], Sequence[float]]]


class Collected(NamedTuple):
    """What a collector hands the run's writer: rows are (step, {metric: number}), plus
    events and batch samples.

    With `snapshot` False the rows are stored as series but kept out of the checkpoints'
    "latest metrics" (system metrics have their own checkpoint section).
    """

    rows: list[tuple[int, dict[str, float]]]
    events: list[EventWrite] = []
    samples: list[SampleWrite] = []
    snapshot: bool = True
