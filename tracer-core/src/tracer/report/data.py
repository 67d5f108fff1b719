"""What a report shows of one run, read from storage once and reduced to drawable size.

Histories can hold a million points; they are downsampled (`tracer.analysis.downsample`), and
heatmap columns are thinned the same way, keeping the anomaly checkpoints, so the page stays
a few hundred kilobytes whatever the run length. The heatmap, samples and checkpoint lookups
are `tracer.analysis.run_view`'s, shared with the dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tracer.analysis import QueryEngine
from tracer.analysis.downsample import BUCKETS, Points, downsample
from tracer.analysis.run_view import (
    NONFINITE_EVENT,
    Heatmap,
    anomaly_samples,
    category,
    heatmap_of,
    model_layers,
    nearest_step,
)
from tracer.records import CheckpointRecord, RunRecord, SampleRecord

logger = logging.getLogger(__name__)

__all__ = ["Heatmap", "RunData", "category", "gather"]


@dataclass
class RunData:
    record: RunRecord
    summary: dict[str, Any]
    series: dict[str, Points]
    anomalies: list[dict[str, Any]]
    heatmap: Heatmap
    first_nonfinite_gradient: Optional[dict[str, Any]]  # step, first_layer, layers
    first_nonfinite_metrics: list[tuple[str, int, str]]  # (series, step, kind) by step
    samples: dict[int, list[SampleRecord]]  # samples at anomaly steps, by step
    last_healthy: Optional[dict[str, Any]]
    label: str = ""
    color: str = ""

    @property
    def run_id(self) -> str:
        return self.record["run_id"]


def _checkpoint_system_series(
    checkpoints: Sequence[CheckpointRecord], known: dict[str, Points]
) -> dict[str, Points]:
    """System metrics kept only in checkpoints (a run shorter than the sampling interval
    stores no `system/` series), as series over the checkpoint steps."""
    collected: dict[str, dict[int, float]] = {}
    for checkpoint in checkpoints:
        for name, value in (checkpoint.get("system_metrics") or {}).items():
            if name not in known and isinstance(value, (int, float)):
                collected.setdefault(name, {})[checkpoint["step"]] = float(value)
    return {
        name: downsample(sorted(points), [points[s] for s in sorted(points)])
        for name, points in collected.items()
        if category(name) == "system"
    }


def gather(query: QueryEngine, run: str, buckets: int = BUCKETS) -> RunData:
    """Everything the report shows of one run (id or name)."""
    record = query.resolve_run(run)
    run_id = record["run_id"]
    summary = query.get_run_summary(run_id)
    series: dict[str, Points] = {}
    for metric in query.storage.list_metrics(run_id):
        name = metric["name"]
        if category(name) == "hidden":
            continue
        steps, values = query.storage.get_metric_arrays(run_id, name)
        series[name] = downsample(steps, values, buckets)
    checkpoints = query.storage.get_checkpoints(run_id)
    series.update(_checkpoint_system_series(checkpoints, series))
    checkpoint_steps = sorted({c["step"] for c in checkpoints})
    anomalies = [
        {**a, "checkpoint_step": nearest_step(checkpoint_steps, a["step"])}
        for a in query.storage.get_anomalies(run_id)
    ]
    events = query.storage.get_events(run_id)
    nonfinite = [e for e in events if e["kind"] == NONFINITE_EVENT]
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
            (name, points.spans[0].first, points.spans[0].kind)
            for name, points in series.items()
            if points.spans
        ),
        key=lambda item: (item[1], item[0]),
    )
    logger.debug("report data of run %s: %d series", run_id, len(series))
    return RunData(
        record=record,
        summary=summary,
        series=series,
        anomalies=anomalies,
        heatmap=heatmap_of(checkpoints, model_layers(events)),
        first_nonfinite_gradient=first_gradient,
        first_nonfinite_metrics=first_metrics,
        samples=anomaly_samples(query.storage, run_id, anomalies, checkpoint_steps),
        last_healthy=query.last_healthy_checkpoint(run_id),
        label=record["run_name"],
    )
