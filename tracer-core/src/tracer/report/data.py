"""What a report shows of one run, read from storage once: the same JSON the dashboard's API
sends (`tracer.analysis.payloads`: the run's detail, and each series reduced by
`reduce_points`), plus what the page says in text before any script runs (the run card's
summary, the first non-finite gradient and values).

A history can hold a million points; each series is reduced to `POINTS` points (min and max
per bucket, first and last point, every NaN/Inf kept), so the page stays small whatever the
run's length, and zooming in the page shows those points (there is no server to ask for more).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tracer.analysis import QueryEngine
from tracer.analysis.downsample import DEFAULT_POINTS
from tracer.analysis.payloads import run_payload, series_of
from tracer.analysis.run_view import NONFINITE_EVENT, category
from tracer.records import CheckpointRecord, RunRecord
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

__all__ = ["POINTS", "RunData", "category", "gather"]

POINTS = DEFAULT_POINTS  # per series, as the dashboard's first view of a chart
UNDRAWN = ("mins", "maxs")  # series fields charts.js does not draw: left out of the file


@dataclass
class RunData:
    record: RunRecord
    summary: dict[str, Any]
    detail: dict[str, Any]  # `run_payload`: what GET /api/runs/<run> answers
    series: dict[str, dict[str, Any]]  # `series_of` by metric name, as GET .../series answers
    first_nonfinite_gradient: Optional[dict[str, Any]]  # step, first_layer, layers
    first_nonfinite_metrics: list[tuple[str, int, str]]  # (series, step, kind) by step
    last_healthy: Optional[dict[str, Any]]
    label: str = ""
    color: str = ""

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def embedded(self) -> dict[str, Any]:
        """This run as the page's script reads it."""
        return {
            "label": self.label,
            "color": self.color,
            "detail": self.detail,
            "series": self.series,
        }


def thin_nonfinite(payload: dict[str, Any], points: int = POINTS) -> dict[str, Any]:
    """A series object whose non-finite points alone exceed the budget (a run that diverged for
    50,000 steps keeps all 50,000 in `reduce_points`), thinned in place: of each stretch of
    consecutive non-finite points, its first and last, and one point of each kind per
    1/`points` of the step range. Finite points are untouched; the dashboard, which fetches
    windows, needs no thinning."""
    steps = payload["steps"]
    if len(steps) <= 2 * points:
        return payload
    kinds = {marker["step"]: marker["kind"] for marker in payload["nonfinite"]}
    width = ((steps[-1] - steps[0]) / points) or 1.0
    seen: set[tuple[int, str]] = set()
    keep = []
    for index, step in enumerate(steps):
        kind = kinds.get(step)
        edge = index in (0, len(steps) - 1)
        if (
            kind is None
            or edge
            or steps[index - 1] not in kinds
            or steps[index + 1] not in kinds
            or (int((step - steps[0]) / width), kind) not in seen
        ):
            keep.append(index)
            if kind is not None:
                seen.add((int((step - steps[0]) / width), kind))
    for key in ("steps", "values", "times"):
        payload[key] = [payload[key][i] for i in keep]
    kept = set(payload["steps"])
    payload["nonfinite"] = [m for m in payload["nonfinite"] if m["step"] in kept]
    return payload


def _series(storage: StorageBackend, run_id: str, name: str, steps: Any, values: Any) -> Any:
    payload = thin_nonfinite(series_of(storage, run_id, name, steps, values, POINTS))
    for field in UNDRAWN:
        payload.pop(field, None)
    payload["category"] = category(name)
    return payload


def _checkpoint_system_series(
    checkpoints: Sequence[CheckpointRecord], known: dict[str, Any]
) -> dict[str, tuple[list[int], list[float]]]:
    """System metrics kept only in checkpoints (a run shorter than the sampling interval
    stores no `system/` series), as (steps, values) over the checkpoint steps."""
    collected: dict[str, dict[int, float]] = {}
    for checkpoint in checkpoints:
        for name, value in (checkpoint.get("system_metrics") or {}).items():
            if name not in known and isinstance(value, (int, float)):
                collected.setdefault(name, {})[checkpoint["step"]] = float(value)
    return {
        name: (sorted(points), [points[s] for s in sorted(points)])
        for name, points in collected.items()
        if category(name) == "system"
    }


def gather(query: QueryEngine, run: str) -> RunData:
    """Everything the report shows of one run (id or name)."""
    storage = query.storage
    record = query.resolve_run(run)
    run_id = record["run_id"]
    series: dict[str, dict[str, Any]] = {}
    for metric in storage.list_metrics(run_id):
        name = metric["name"]
        if category(name) == "hidden":
            continue
        steps, values = storage.get_metric_arrays(run_id, name)
        series[name] = _series(storage, run_id, name, steps, values)
    checkpoints = storage.get_checkpoints(run_id)
    for name, (steps, values) in _checkpoint_system_series(checkpoints, series).items():
        series[name] = _series(storage, run_id, name, steps, values)
    nonfinite = [e for e in storage.get_events(run_id) if e["kind"] == NONFINITE_EVENT]
    first_gradient = None
    if nonfinite:
        data = nonfinite[0]["data"]
        layers = list(data.get("layers") or [])
        first_layer = data.get("first_layer") or (layers[0] if layers else "")
        first_gradient = {
            "step": nonfinite[0]["step"],
            "first_layer": first_layer,
            "layers": layers,
        }
    first_metrics = sorted(
        (
            (name, payload["nonfinite"][0]["step"], payload["nonfinite"][0]["kind"])
            for name, payload in series.items()
            if payload["nonfinite"]
        ),
        key=lambda item: (item[1], item[0]),
    )
    logger.debug("report data of run %s: %d series", run_id, len(series))
    return RunData(
        record=record,
        summary=query.get_run_summary(run_id),
        detail=run_payload(query, run_id),
        series=series,
        first_nonfinite_gradient=first_gradient,
        first_nonfinite_metrics=first_metrics,
        last_healthy=query.last_healthy_checkpoint(run_id),
        label=record["run_name"],
    )
