"""The JSON of one run as every view shows it: the dashboard's API (`tracer.ui.api` routes to
these) and the report (which embeds them in its page), so both draw from the same data.

Plain functions from a `QueryEngine` or a `StorageBackend` to dicts. Numbers that may be NaN
or +-Inf are encoded as `tracer.analysis.encode` says; histories are reduced by
`tracer.analysis.downsample.reduce_points`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tracer.analysis.downsample import Reduced, kind_of, reduce_points
from tracer.analysis.encode import marked, nulled, number, numbers, spelled
from tracer.analysis.query import MODEL_SAVED_EVENT, QueryEngine
from tracer.analysis.run_view import (
    anomaly_samples,
    category,
    first_serious_step,
    heatmap_of,
    model_layers,
)
from tracer.records import AnomalyWrite, RunRecord
from tracer.storage.base import StorageBackend

TIMESTAMP_SERIES = "_timestamp"  # the wall time of every step, written by the run
SEVERITIES = ("critical", "warning", "info")
ANOMALY_NUMBERS = ("value", "baseline", "threshold")


# -- runs -------------------------------------------------------------------------------------
def run_row(
    record: RunRecord, counts: Mapping[str, int], now: Optional[float] = None
) -> dict[str, Any]:
    """One run as the listing shows it; `counts` are its anomaly episodes by severity."""
    start, end = record["start_time"], record["end_time"]
    if end is None:
        running = record["status"] == "running"
        end = (time.time() if now is None else now) if running else record["heartbeat"]
    return {
        "run_id": record["run_id"],
        "project": record["project_name"],
        "name": record["run_name"],
        "status": record["status"],
        "steps": record["total_steps"],
        "start_time": record["start_time"],
        "end_time": record["end_time"],
        "heartbeat": record["heartbeat"],
        "duration_s": number((end or start) - start),
        "tags": list(record["tags"]),
        "notes": record["notes"],
        "config": spelled(record["config"]),
        "anomalies": {severity: int(counts.get(severity, 0)) for severity in SEVERITIES},
        "host": record["host"],
        "pid": record["pid"],
        "error": record["error"],
    }


# -- one run ----------------------------------------------------------------------------------
def anomaly_row(anomaly: AnomalyWrite) -> dict[str, Any]:
    """One anomaly episode; value, baseline and threshold may be NaN (marked)."""
    fields = {
        "step": anomaly["step"],
        "end_step": anomaly["end_step"],
        "anomaly_type": anomaly["anomaly_type"],
        "severity": anomaly["severity"],
        "subject": anomaly["subject"],
        "message": anomaly["message"],
        "value": anomaly["value"],
        "baseline": anomaly["baseline"],
        "threshold": anomaly["threshold"],
        "hint": anomaly["hint"],
        "count": anomaly["count"],
        "open": bool(anomaly["open"]),
    }
    return marked(fields, ANOMALY_NUMBERS)


def run_payload(query: QueryEngine, run: str) -> dict[str, Any]:
    """`GET /api/runs/<run>`: the run, its series (summaries only), checkpoints, model
    saves (with where each is pinned, when it is), anomalies, gradient heatmap and the batch
    samples stored at anomaly steps."""
    storage = query.storage
    record = query.resolve_run(run)
    run_id = record["run_id"]
    anomalies = storage.get_anomalies(run_id)
    counts: dict[str, int] = {}
    for anomaly in anomalies:
        counts[anomaly["severity"]] = counts.get(anomaly["severity"], 0) + 1
    checkpoints = storage.get_checkpoints(run_id)
    checkpoint_steps = sorted({c["step"] for c in checkpoints})
    events = storage.get_events(run_id)
    first_bad = first_serious_step(anomalies)
    healthy = [first_bad is None or c["step"] < first_bad for c in checkpoints]
    last_healthy = max((i for i, ok in enumerate(healthy) if ok), default=-1)
    healthy_save = query.last_healthy_checkpoint(run_id)
    pinned = {
        (p["step"], p["path"]): p["pinned_path"]
        for p in query.pinned_checkpoints(run_id)
        if p["exists"]
    }
    samples = anomaly_samples(storage, run_id, anomalies, checkpoint_steps)
    return {
        "run": run_row(record, counts),
        "series": [
            {
                **marked(
                    {
                        "name": m["name"],
                        "count": m["count"],
                        "last_step": m["last_step"],
                        "last_value": m["last_value"],
                        "min": m["min_value"],
                        "max": m["max_value"],
                    },
                    ("last_value", "min", "max"),
                ),
                "category": category(m["name"]),
            }
            for m in storage.list_metrics(run_id)
            if category(m["name"]) != "hidden"
        ],
        "checkpoints": [
            {
                "step": c["step"],
                "timestamp": c["timestamp"],
                "reason": c["reason"],
                "healthy": healthy[i],
                "last_healthy": i == last_healthy,
            }
            for i, c in enumerate(checkpoints)
        ],
        "model_saves": [
            {
                "step": e["step"],
                "path": e["data"].get("path"),
                "last_healthy": healthy_save is not None and e["step"] == healthy_save["step"],
                "pinned_path": pinned.get((e["step"], e["data"].get("path"))),
            }
            for e in events
            if e["kind"] == MODEL_SAVED_EVENT
        ],
        "anomalies": [anomaly_row(a) for a in anomalies],
        "heatmap": _heatmap(checkpoints, events),
        "samples": [_sample(s) for step in sorted(samples) for s in samples[step]],
    }


def _heatmap(checkpoints: Any, events: Any) -> dict[str, Any]:
    """Layers x checkpoint steps, sent as norms[step][layer] with NaN/Inf cells listed."""
    heatmap = heatmap_of(checkpoints, model_layers(events))
    nonfinite: list[list[Any]] = []
    norms: list[list[Optional[float]]] = []
    for column in range(len(heatmap.steps)):
        row: list[Optional[float]] = []
        for layer, values in enumerate(heatmap.norms):
            value = values[column]
            if value is not None and value - value != 0.0:
                nonfinite.append([column, layer, kind_of(value)])
                value = None
            row.append(value)
        norms.append(row)
    return {
        "layers": heatmap.layers,
        "steps": heatmap.steps,
        "norms": norms,
        "nonfinite": nonfinite,
    }


def _sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    found: list[list[Any]] = []
    values = nulled(sample["values"], (), found)
    return {
        **{k: sample[k] for k in ("step", "reason", "role", "name", "shape", "dtype")},
        "values": values,
        "truncated": bool(sample["truncated"]),
        "nonfinite": found,  # [index, ..., kind] of each NaN/Inf in `values`
    }


# -- one series -------------------------------------------------------------------------------
def _times_at(storage: StorageBackend, run_id: str, steps: Sequence[int]) -> list[Any]:
    """The wall time of each step (from `_timestamp`), None where it is unknown."""
    if not steps:
        return []
    known, times = storage.get_metric_window(run_id, TIMESTAMP_SERIES, steps[0], steps[-1])
    out: list[Any] = []
    for step in steps:
        index = bisect_left(known, step)
        found = index < len(known) and known[index] == step
        out.append(number(times[index]) if found else None)
    return out


def series_of(
    storage: StorageBackend,
    run_id: str,
    metric: str,
    steps: Sequence[int],
    values: Sequence[float],
    points: int,
    window: tuple[Optional[int], Optional[int]] = (None, None),
) -> dict[str, Any]:
    """The series object of the API for points already read (`steps`, `values`)."""
    return reduced_series(storage, run_id, metric, reduce_points(steps, values, points), window)


def reduced_series(
    storage: StorageBackend,
    run_id: str,
    metric: str,
    reduced: Reduced,
    window: tuple[Optional[int], Optional[int]] = (None, None),
) -> dict[str, Any]:
    """The series object of the API for a reduction already made (by the storage, with
    `get_metric_reduced`, or by `series_of`)."""
    start, end = window
    return {
        "run_id": run_id,
        "metric": metric,
        "start": start if start is not None else (reduced.steps[0] if reduced.steps else None),
        "end": end if end is not None else (reduced.steps[-1] if reduced.steps else None),
        "count": reduced.count,
        "reduced": reduced.reduced,
        "steps": reduced.steps,
        "values": numbers(reduced.values),
        "mins": numbers(reduced.mins),
        "maxs": numbers(reduced.maxs),
        "times": _times_at(storage, run_id, reduced.steps),
        "nonfinite": [
            {"step": reduced.steps[n], "kind": kind_of(reduced.values[n])}
            for n in reduced.nonfinite
        ],
    }
