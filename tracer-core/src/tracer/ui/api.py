"""The dashboard's JSON API, as plain functions from a `QueryEngine` to dicts (the Starlette
app only routes to them), so the contract is testable without a web server. What the report
shows too (a run row, a run's detail, a series) is built in `tracer.analysis.payloads` and
only routed from here.

Runs are named by id or name (`QueryEngine.resolve_run`); an unknown one raises
`RunNotFoundError`, an unknown metric `NotFound`, a bad parameter `ValueError`. Numbers that
may be NaN or +-Inf are encoded as `tracer.analysis.encode` says. The runs listing reads run rows
and anomaly counts only, never a metric history: it is what the page polls.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tracer.analysis import QueryEngine
from tracer.analysis.comparison import first_divergence
from tracer.analysis.downsample import DEFAULT_POINTS
from tracer.analysis.encode import spelled
from tracer.analysis.payloads import (
    ANOMALY_NUMBERS,
    SEVERITIES,
    TIMESTAMP_SERIES,
    anomaly_row,
    reduced_series,
    run_payload,
    run_row,
    series_of,
)
from tracer.records import RunRecord
from tracer.storage.base import StorageBackend

__all__ = [
    "ANOMALY_NUMBERS",
    "MAX_COMPARED",
    "MAX_POINTS",
    "SEVERITIES",
    "TIMESTAMP_SERIES",
    "NotFound",
    "anomaly_row",
    "compare_payload",
    "config_diff",
    "points_param",
    "run_payload",
    "run_row",
    "runs_payload",
    "series_of",
    "series_payload",
]

MAX_POINTS = 20_000
MAX_COMPARED = 20


class NotFound(LookupError):
    """Something other than a run (a metric) does not exist: a 404."""


# -- runs -------------------------------------------------------------------------------------
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
    reduced = storage.get_metric_reduced(run_id, metric, *window, points=points)
    if not reduced.count and metric not in {m["name"] for m in storage.list_metrics(run_id)}:
        raise NotFound(f"run {run_id} has no metric {metric!r}")
    payload = reduced_series(storage, run_id, metric, reduced, window)
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
