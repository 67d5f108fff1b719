"""The runs table (`QueryEngine.runs_frame`): one row per run, for filtering and grouping a
sweep in pandas or polars.

Columns, in this order: `run_id`, `run_name`, `project`, `status`, `start_time`, `end_time`,
`duration` (seconds; to now for a running run), `total_steps`, `world_size`, `tags` (joined
with ","), `notes`, `error`; `config.<key>` for every config value (nested mappings
flattened with "."); `summary.<key>` for the values a run logged as its summary;
`final.<metric>` (the last value) and `best.<metric>` (the min of losses and errors, the max
of accuracy-like metrics: `best_direction`) of every metric but Tracer's `_` series;
`anomalies` (episodes) and `anomalies.<severity>`. A value a run lacks is null.

Why four queries and no more: a sweep has thousands of runs, and the listing reads run rows,
`anomaly_counts`, `metric_summaries` and `events_by_run` (each one query in SQLite), never a
history. A column whose values have no common Arrow type (an int in one run, a string in
another) is written as JSON text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from tracer.analysis.frames import require
from tracer.records import SEVERITIES
from tracer.storage.base import StorageBackend

RUN_COLUMNS = (
    "run_id", "run_name", "project", "status", "start_time", "end_time", "duration",
    "total_steps", "world_size", "tags", "notes", "error",
)  # fmt: skip
FORMATS = ("pandas", "arrow", "polars")


def runs_table(
    storage: StorageBackend,
    project: Optional[str],
    best_direction: Callable[[str], Optional[str]],
) -> Any:
    """The runs table as a pyarrow Table (see the module docstring for its columns)."""
    pa = require("pyarrow", "runs_frame")
    runs = storage.list_runs(project)
    counts = storage.anomaly_counts(project)
    summaries = storage.metric_summaries(project)
    logged = storage.events_by_run("summary", project)
    now = time.time()
    directions: dict[str, Optional[str]] = {}  # a sweep's runs share their metric names
    rows: list[dict[str, Any]] = []
    for run in runs:
        rid = run["run_id"]
        end = run["end_time"]
        if end is None:
            end = now if run["status"] == "running" else (run["heartbeat"] or run["start_time"])
        row: dict[str, Any] = {
            "run_id": rid,
            "run_name": run["run_name"],
            "project": run["project_name"],
            "status": run["status"],
            "start_time": run["start_time"],
            "end_time": run["end_time"],
            "duration": end - run["start_time"],
            "total_steps": run["total_steps"],
            "world_size": run["world_size"],
            "tags": ",".join(run["tags"]),
            "notes": run["notes"],
            "error": run["error"],
        }
        _flatten("config", run["config"], row)
        for event in logged.get(rid, []):
            _flatten("summary", event["data"], row)
        for metric in summaries.get(rid, []):
            name = metric["name"]
            if name.startswith("_"):
                continue
            row[f"final.{name}"] = metric["last_value"]
            if name not in directions:
                directions[name] = best_direction(name)
            direction = directions[name]
            if direction is not None:
                row[f"best.{name}"] = metric["min_value" if direction == "min" else "max_value"]
        by_severity = counts.get(rid, {})
        row["anomalies"] = sum(by_severity.values())
        for severity in SEVERITIES:
            row[f"anomalies.{severity}"] = by_severity.get(severity, 0)
        rows.append(row)
    names = list(RUN_COLUMNS)
    seen = set(names)
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                extra.append(key)
    names.extend(sorted(extra, key=_column_order))
    columns = {name: _column(pa, [row.get(name) for row in rows]) for name in names}
    return pa.table(columns)


def convert(table: Any, as_: str) -> Any:
    """The runs table in the library asked for."""
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        require("pandas", "runs_frame")
        return table.to_pandas()
    if as_ == "polars":
        return require("polars", "runs_frame").from_arrow(table)
    raise ValueError(f"as_ must be one of {', '.join(FORMATS)}, got {as_!r}")


def _flatten(prefix: str, values: Mapping[str, Any], row: dict[str, Any]) -> None:
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            _flatten(name, value, row)
        else:
            row[name] = value


def _column_order(name: str) -> tuple[int, str]:
    """config, summary, final, best, anomalies: the order the groups are listed in."""
    groups = ("config.", "summary.", "final.", "best.", "anomalies")
    return next((n for n, g in enumerate(groups) if name.startswith(g)), len(groups)), name


def _column(pa: Any, values: list[Any]) -> Any:
    """An Arrow column of these values, or their JSON text when they share no type."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return pa.array(
            [None if v is None else json.dumps(v, default=str, allow_nan=True) for v in values],
            pa.string(),
        )
