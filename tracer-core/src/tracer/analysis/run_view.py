"""What every view of one run shows besides its curves, read from storage the same way for
the HTML report (`tracer.report`) and the dashboard (`tracer.ui`): which section a series
belongs to, the per-layer gradient-norm heatmap over checkpoints (thinned to a cell budget,
anomaly checkpoints kept), the nearest checkpoint of a step, the batch samples captured at
anomaly steps, and the first serious anomaly (before it, checkpoints are "healthy").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tracer.records import AnomalyWrite, CheckpointRecord, EventRecord, SampleRecord
from tracer.storage.base import StorageBackend

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


def heatmap_of(checkpoints: Sequence[CheckpointRecord], model_layers: Sequence[str]) -> Heatmap:
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


def model_layers(events: Sequence[EventRecord]) -> list[str]:
    """The watched layers in parameter order, as the gradient capture announced them."""
    return [
        str(layer)
        for e in events
        if e["kind"] == CAPTURE_EVENT
        for layer in e["data"].get("layers", [])
    ]


def first_serious_step(anomalies: Sequence[AnomalyWrite]) -> Optional[int]:
    """The step of the first anomaly of severity warning or critical (None without one): a
    checkpoint or model save before it is "healthy", the rule of
    `QueryEngine.last_healthy_checkpoint`."""
    steps = [a["step"] for a in anomalies if a["severity"] != "info"]
    return min(steps) if steps else None


def nearest_step(steps: Sequence[int], step: int) -> Optional[int]:
    """The checkpoint step nearest to `step` (the later one on a tie), as `anomaly_dict`
    finds it, by bisection: a run can have thousands of anomalies and checkpoints."""
    index = bisect_left(steps, step)
    near = steps[max(index - 1, 0) : index + 1]
    return min(near, key=lambda s: (abs(s - step), -s)) if near else None


def anomaly_samples(
    storage: StorageBackend,
    run_id: str,
    anomalies: Sequence[Mapping[str, Any]],
    checkpoint_steps: Sequence[int],
) -> dict[int, list[SampleRecord]]:
    """Samples captured at anomaly steps (those of reason "anomaly" when a step has both)."""
    found: dict[int, list[SampleRecord]] = {}
    for step in dict.fromkeys(a["step"] for a in anomalies):
        if step not in checkpoint_steps:  # samples are only stored with a checkpoint
            continue
        if len(found) >= MAX_SAMPLE_STEPS:
            break
        samples = storage.get_samples(run_id, step=step)
        chosen = [s for s in samples if s["reason"] == "anomaly"] or samples
        if chosen:
            found[step] = chosen
    return found
