"""The dashboard's JSON API, as plain functions from a `QueryEngine` to dicts (the Starlette
app only routes to them), so the contract is testable without a web server.

Runs are named by id or name (`QueryEngine.resolve_run`); an unknown one raises
`RunNotFoundError`, an unknown metric `NotFound`, a bad parameter `ValueError`. Numbers that
may be NaN or +-Inf are encoded as `tracer.ui.encode` says. The runs listing reads run rows
and anomaly counts only, never a metric history: it is what the page polls.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tracer.analysis import QueryEngine
from tracer.analysis.downsample import DEFAULT_POINTS, kind_of, reduce_points
from tracer.analysis.query import MODEL_SAVED_EVENT, first_divergence
from tracer.analysis.run_view import (
    anomaly_samples,
    category,
    first_serious_step,
    heatmap_of,
    model_layers,
)
from tracer.records import AnomalyWrite, RunRecord
from tracer.storage.base import StorageBackend
from tracer.ui.encode import marked, nulled, number, numbers, spelled

MAX_POINTS = 20_000
MAX_COMPARED = 20
TIMESTAMP_SERIES = "_timestamp"  # the wall time of every step, written by the run
SEVERITIES = ("critical", "warning", "info")
ANOMALY_NUMBERS = ("value", "baseline", "threshold")


class NotFound(LookupError):
    """Something other than a run (a metric) does not exist: a 404."""


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


def runs_payload(query: QueryEngine, project: Optional[str] = None) -> dict[str, Any]:
    """`GET /api/runs`: every run (of `project`), newest first, and every project's name."""
    records = query.storage.list_runs()
    counts = query.storage.anomaly_counts(project)
    now = time.time()
    return {
        "runs": [
            run_row(r, counts.get(r["run_id"], {}), now)
            for r in records
            if project is None or r["project_name"] == project
        ],
        "projects": sorted({r["project_name"] for r in records}),
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
    saves, anomalies, gradient heatmap and the batch samples stored at anomaly steps."""
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
def points_param(raw: Optional[str]) -> int:
    """The `points` parameter: default 1000, at most 20000."""
    if raw is None or raw == "":
        return DEFAULT_POINTS
    points = int(raw)
    if points < 2:
        raise ValueError("points must be at least 2")
    return min(points, MAX_POINTS)


def _steps_of_times(
    storage: StorageBackend, run_id: str, start: Optional[float], end: Optional[float]
) -> tuple[Optional[int], Optional[int]]:
    """A wall-time window as a step window, through the run's `_timestamp` series (times
    ascend with steps); a window that holds no step comes back as (1, 0), empty."""
    steps, times = storage.get_metric_arrays(run_id, TIMESTAMP_SERIES)
    low = 0 if start is None else bisect_left(times, start)
    high = len(steps) if end is None else bisect_right(times, end)
    if low >= high:
        return 1, 0
    return (None if start is None else steps[low]), (None if end is None else steps[high - 1])


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
    reduced = reduce_points(steps, values, points)
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


def series_payload(
    query: QueryEngine,
    run: str,
    metric: str,
    points: int = DEFAULT_POINTS,
    start: Optional[float] = None,
    end: Optional[float] = None,
    x: str = "step",
) -> dict[str, Any]:
    """`GET /api/runs/<run>/series`: one metric over [start, end] (steps, or wall times
    with x=time), reduced to about `points` points (`tracer.analysis.downsample`)."""
    if x not in ("step", "time"):
        raise ValueError("x must be step or time")
    storage = query.storage
    run_id = query.resolve_run(run)["run_id"]
    if x == "time":
        window = _steps_of_times(storage, run_id, start, end)
    else:
        window = (None if start is None else int(start), None if end is None else int(end))
    steps, values = storage.get_metric_window(run_id, metric, *window)
    if not steps and metric not in {m["name"] for m in storage.list_metrics(run_id)}:
        raise NotFound(f"run {run_id} has no metric {metric!r}")
    payload = series_of(storage, run_id, metric, steps, values, points, window)
    if x == "time":
        payload["x"] = "time"
    return payload


# -- comparing runs ---------------------------------------------------------------------------
def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(records: Sequence[RunRecord]) -> dict[str, dict[str, Any]]:
    """{key: {run_id: value}} of the config keys (nested ones dotted) whose values differ
    between the runs; a run without the key shows null."""
    flat = {r["run_id"]: _flat(r["config"]) for r in records}
    keys = sorted({key for config in flat.values() for key in config})
    missing = object()
    diff: dict[str, dict[str, Any]] = {}
    for key in keys:
        seen = [flat[r["run_id"]].get(key, missing) for r in records]
        if any(repr(v) != repr(seen[0]) for v in seen[1:]):
            diff[key] = {
                r["run_id"]: None if v is missing else spelled(v)
                for r, v in zip(records, seen, strict=True)
            }
    return diff


def compare_payload(
    query: QueryEngine, runs: str, metric: str, points: int = DEFAULT_POINTS
) -> dict[str, Any]:
    """`GET /api/compare`: one metric of several runs, their config differences, and where
    they diverge (the first step where any run leaves the first one, by the rule of
    `QueryEngine.compare_runs`). Each history is read once, for its curve and the check."""
    names = [name.strip() for name in runs.split(",") if name.strip()]
    if not names:
        raise ValueError("runs= names at least one run")
    if len(names) > MAX_COMPARED:
        raise ValueError(f"compare at most {MAX_COMPARED} runs")
    records = list({r["run_id"]: r for r in map(query.resolve_run, names)}.values())
    storage = query.storage
    counts = storage.anomaly_counts()
    histories = {r["run_id"]: storage.get_metric_arrays(r["run_id"], metric) for r in records}
    reference = records[0]["run_id"]
    divergence: Optional[dict[str, Any]] = None
    if len(records) > 1:
        steps_a, values_a = histories[reference]
        by_run = {
            r["run_id"]: first_divergence(steps_a, values_a, *histories[r["run_id"]])
            for r in records[1:]
        }
        diverged = [(step, rid) for rid, step in by_run.items() if step is not None]
        step, first_run = min(diverged) if diverged else (None, None)
        divergence = {
            "reference": reference,
            "step": step,
            "run_id": first_run,
            "runs": by_run,
        }
    return {
        "metric": metric,
        "runs": [run_row(r, counts.get(r["run_id"], {})) for r in records],
        "series": {
            rid: series_of(storage, rid, metric, steps, values, points)
            for rid, (steps, values) in histories.items()
        },
        "config_diff": config_diff(records),
        "divergence": divergence,
    }
