"""What a report shows of one run, read from storage once and reduced to drawable size.

Histories can hold a million points; they are downsampled (`tracer.analysis.downsample`), and
heatmap columns are thinned the same way, keeping the anomaly checkpoints, so the page stays
a few hundred kilobytes whatever the run length.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tracer.analysis import QueryEngine
from tracer.analysis.downsample import BUCKETS, Points, downsample
from tracer.records import CheckpointRecord, RunRecord, SampleRecord

logger = logging.getLogger(__name__)

MAX_HEATMAP_CELLS = 6000
MAX_HEATMAP_COLUMNS = 300
MAX_SAMPLE_STEPS = 10
NONFINITE_EVENT = "nonfinite_gradients"
CAPTURE_EVENT = "gradient_capture"


@dataclass
class Heatmap:
    layers: list[str]
    steps: list[int]
    norms: list[list[Optional[float]]]  # one row per layer, one value per column


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


def category(name: str) -> str:
    """Which section shows a series: "hidden", "gradient", "system" or "metric"."""
    if name.startswith("_"):
        return "hidden"
    if name.startswith(("grad/", "optimizer/")):
        return "gradient"
    if name.startswith("system/"):
        return "system"
    if name.startswith("rank/"):
        return "system" if "memory" in name else "gradient"
    return "metric"


def _heatmap(checkpoints: Sequence[CheckpointRecord], model_layers: Sequence[str]) -> Heatmap:
    """Per-layer gradient norms over the checkpoints that have them (one column per step; an
    anomaly checkpoint wins over another at the same step), thinned to a cell budget."""
    by_step: dict[int, CheckpointRecord] = {}
    for checkpoint in checkpoints:
        if not checkpoint["gradient_stats"]:
            continue
        step = checkpoint["step"]
        if step not in by_step or checkpoint["reason"] == "anomaly":
            by_step[step] = checkpoint
    layers = list(dict.fromkeys(model_layers))
    for checkpoint in by_step.values():
        layers.extend(name for name in checkpoint["gradient_stats"] if name not in layers)
    steps = sorted(by_step)
    limit = min(MAX_HEATMAP_COLUMNS, max(10, MAX_HEATMAP_CELLS // max(len(layers), 1)))
    if len(steps) > limit:
        keep = {steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)}
        keep.update(s for s in steps if by_step[s]["reason"] == "anomaly")
        steps = sorted(keep)
    norms: list[list[Optional[float]]] = []
    for layer in layers:
        row: list[Optional[float]] = []
        for step in steps:
            stats = by_step[step]["gradient_stats"].get(layer)
            norm = stats.get("norm") if isinstance(stats, dict) else None
            row.append(None if norm is None else float(norm))
        norms.append(row)
    return Heatmap(layers, steps, norms)


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


def _nearest(steps: Sequence[int], step: int) -> Optional[int]:
    """The checkpoint step nearest to `step` (the later one on a tie), as `anomaly_dict`
    finds it, by bisection: a run can have thousands of anomalies and checkpoints."""
    index = bisect_left(steps, step)
    near = steps[max(index - 1, 0) : index + 1]
    return min(near, key=lambda s: (abs(s - step), -s)) if near else None


def _anomaly_samples(
    query: QueryEngine,
    run_id: str,
    anomalies: Sequence[dict[str, Any]],
    checkpoint_steps: Sequence[int],
) -> dict[int, list[SampleRecord]]:
    """Samples captured at anomaly steps (those of reason "anomaly" when a step has both)."""
    found: dict[int, list[SampleRecord]] = {}
    for step in dict.fromkeys(a["step"] for a in anomalies):
        if step not in checkpoint_steps:  # samples are only stored with a checkpoint
            continue
        if len(found) >= MAX_SAMPLE_STEPS:
            break
        samples = query.storage.get_samples(run_id, step=step)
        chosen = [s for s in samples if s["reason"] == "anomaly"] or samples
        if chosen:
            found[step] = chosen
    return found


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
        {**a, "checkpoint_step": _nearest(checkpoint_steps, a["step"])}
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
    model_layers = [
        str(layer)
        for e in events
        if e["kind"] == CAPTURE_EVENT
        for layer in e["data"].get("layers", [])
    ]
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
        heatmap=_heatmap(checkpoints, model_layers),
        first_nonfinite_gradient=first_gradient,
        first_nonfinite_metrics=first_metrics,
        samples=_anomaly_samples(query, run_id, anomalies, checkpoint_steps),
        last_healthy=query.last_healthy_checkpoint(run_id),
        label=record["run_name"],
    )
