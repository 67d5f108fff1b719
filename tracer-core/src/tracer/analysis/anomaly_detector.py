"""`AnomalyDetector`: run the detectors over a stored run, after the fact.

It replays what the run stored (every series, the events, the checkpoints except those that
anomalies themselves caused) through the same detector classes the run used online, with
the detector settings stored with the run, so the result matches online detection.
`store_anomalies` writes them; an anomaly already stored (same run, type, step and subject)
is never stored twice. Runs are named by id or by name, as in `QueryEngine`.
"""

from __future__ import annotations

import bisect
import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any, Optional

from tracer.detection.runner import DetectorSet, build_detectors, merge_episodes
from tracer.exceptions import RunNotFoundError
from tracer.plugins.manager import get_plugin_manager
from tracer.records import AnomalyWrite, RunRecord
from tracer.storage.base import StorageBackend

GRADIENT_TYPES = ("gradient_explosion", "vanishing_gradient", "dead_layer")
LOSS_TYPES = ("loss_spike", "loss_drop", "loss_divergence", "loss_plateau")
NAN_INF_TYPES = ("nan_or_inf",)
MEMORY_TYPES = ("memory_spike", "memory_leak")


def resolve_run(storage: StorageBackend, run: str) -> RunRecord:
    """The run with id `run`, else the one run named `run` (in any project).

    RunNotFoundError when a name matches runs in several projects (it lists them), or
    nothing (it lists near matches).
    """
    record = storage.get_run(run)
    if record is not None:
        return record
    runs = storage.list_runs()
    named = [r for r in runs if r["run_name"] == run]
    if len(named) == 1:
        return named[0]
    if named:
        where = ", ".join(f"{r['run_id']} in {r['project_name']!r}" for r in named)
        raise RunNotFoundError(f"run name {run!r} is ambiguous: {where}; use an id")
    candidates = [r["run_id"] for r in runs] + [r["run_name"] for r in runs]
    near = difflib.get_close_matches(run, candidates, n=5, cutoff=0.4)
    hint = f"; near matches: {', '.join(near)}" if near else ""
    raise RunNotFoundError(f"no run with id or name {run!r}{hint}")


def anomaly_dict(anomaly: AnomalyWrite, checkpoint_steps: Sequence[int] = ()) -> dict[str, Any]:
    """The public shape: the stored fields, `details` (the SEED-API's), and the step of the
    nearest checkpoint (None when the run has none; the later one on a tie).
    `checkpoint_steps` is sorted ascending, so the lookup is a bisection."""
    nearest = None
    if checkpoint_steps:
        step = anomaly["step"]
        index = bisect.bisect_left(checkpoint_steps, step)
        around = checkpoint_steps[max(index - 1, 0) : index + 1]
        nearest = min(around, key=lambda s: (abs(s - step), -s))
    details = {
        "subject": anomaly["subject"],
        "end_step": anomaly["end_step"],
        "count": anomaly["count"],
        "hint": anomaly["hint"],
        "value": anomaly["value"],
        "baseline": anomaly["baseline"],
        "threshold": anomaly["threshold"],
        "message": anomaly["message"],
        "detector": anomaly["detector"],
    }
    return {**anomaly, "details": details, "checkpoint_step": nearest}


class AnomalyDetector:
    """Offline detection over a storage backend (`StorageBackend(config)` or any backend)."""

    def __init__(
        self,
        storage_backend: StorageBackend,
        detectors: Optional[dict[str, Any]] = None,
        loss_metrics: Optional[Sequence[str]] = None,
    ) -> None:
        """`detectors` / `loss_metrics` override the settings stored with each run."""
        self.storage = storage_backend
        self._detectors = detectors
        self._loss_metrics = loss_metrics

    def _replay(
        self,
        run: str,
        only: Optional[Sequence[str]],
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> list[dict[str, Any]]:
        """Feed the stored run to the detectors: events first, then each series in name order
        (read and judged one at a time, so `progress(done, total)` can follow a large run),
        then the checkpoints; the same order as one feed of everything."""
        record = resolve_run(self.storage, run)
        run_id = record["run_id"]
        stored = record.get("settings") or {}
        settings = self._detectors if self._detectors is not None else stored.get("detectors", {})
        loss_metrics = self._loss_metrics or stored.get("loss_metrics") or ["*loss*"]
        registry = get_plugin_manager().detector_classes()
        detectors = build_detectors(  # stored settings may name a plugin this machine lacks
            registry, settings, loss_metrics, only=only, strict=self._detectors is not None
        )
        runner = DetectorSet(run_id, detectors, only_types=only)
        names = sorted(
            m["name"]
            for m in self.storage.list_metrics(run_id)
            if not m["name"].startswith("_") and any(d.wants(m["name"]) for d in detectors)
        )
        total = len(names) + 2
        found = runner.feed({}, self.storage.get_events(run_id))
        if progress is not None:
            progress(1, total)
        for done, name in enumerate(names, start=2):
            series = self.storage.get_metric_timeseries(run_id, name)
            found += runner.feed({name: (series["steps"], series["values"])})
            if progress is not None:
                progress(done, total)
        checkpoints = [c for c in self.storage.get_checkpoints(run_id) if c["reason"] != "anomaly"]
        found += runner.feed({}, (), checkpoints)
        if record["status"] != "running":
            found += runner.finish()  # as the writer did when the run ended
        found = merge_episodes(found)
        if progress is not None:
            progress(total, total)
        steps = sorted({c["step"] for c in self.storage.get_checkpoints(run_id)})
        found.sort(key=lambda a: (a["step"], a["anomaly_type"], a["subject"]))
        return [anomaly_dict(anomaly, steps) for anomaly in found]

    def detect_all_anomalies(self, run_id: str) -> list[dict[str, Any]]:
        """Every detector enabled for the run."""
        return self._replay(run_id, None)

    def detect(
        self,
        run_id: str,
        anomaly_types: Optional[Sequence[str]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> list[dict[str, Any]]:
        """The detectors reporting `anomaly_types` (all when None); `progress(done, total)`
        is called as the run's series are judged (the `tracer anomalies --detect` bar)."""
        return self._replay(run_id, anomaly_types, progress)

    def detect_gradient_anomalies(self, run_id: str) -> list[dict[str, Any]]:
        """Gradient explosion (global and per layer), vanishing gradients, dead layers."""
        return self._replay(run_id, GRADIENT_TYPES)

    def detect_loss_anomalies(self, run_id: str) -> list[dict[str, Any]]:
        """Loss spikes and drops, divergence and plateaus, on every loss metric."""
        return self._replay(run_id, LOSS_TYPES)

    def detect_nan_inf(self, run_id: str) -> list[dict[str, Any]]:
        """The first non-finite value of each metric and the first non-finite gradient."""
        return self._replay(run_id, NAN_INF_TYPES)

    def detect_memory_spikes(self, run_id: str) -> list[dict[str, Any]]:
        """Memory jumps, memory near a GPU's capacity, and steady growth (leaks)."""
        return self._replay(run_id, MEMORY_TYPES)

    def store_anomalies(self, anomalies: Sequence[dict[str, Any]]) -> int:
        """Store anomaly episodes (an episode already stored gets the progress of this one);
        returns how many were new."""
        rows: list[AnomalyWrite] = []
        for anomaly in anomalies:
            details = anomaly.get("details") or {}
            rows.append(
                {
                    "run_id": anomaly["run_id"],
                    "step": int(anomaly["step"]),
                    "anomaly_type": anomaly["anomaly_type"],
                    "severity": anomaly.get("severity", "warning"),
                    "subject": anomaly.get("subject", details.get("subject", "")) or "",
                    "value": _number(anomaly.get("value", details.get("value"))),
                    "baseline": _number(anomaly.get("baseline", details.get("baseline"))),
                    "threshold": _number(anomaly.get("threshold", details.get("threshold"))),
                    "message": anomaly.get("message", details.get("message", "")) or "",
                    "detector": anomaly.get("detector", details.get("detector", "")) or "",
                    "end_step": int(anomaly.get("end_step", anomaly["step"])),
                    "count": int(anomaly.get("count", 1)),
                    "open": bool(anomaly.get("open", False)),
                    "hint": anomaly.get("hint", "") or "",
                }
            )
        return self.storage.write_anomalies(rows) if rows else 0


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
