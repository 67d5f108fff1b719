"""`QueryEngine`: questions about stored runs, answered from storage alone.

Runs are named by id or by name (a name matching runs in several projects is an error that
lists them; an unknown one lists near matches). Everything reads what is committed, so it
works while the run is still being written. Summaries use the per-metric aggregates kept
on write; only `compare_runs` reads whole histories (one packed read per metric).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

from tracer.analysis import frames, pandas_frames, runs_table
from tracer.analysis.anomaly_detector import anomaly_dict, resolve_run
from tracer.analysis.comparison import describe, first_divergence_between
from tracer.analysis.results import AnomalyList, Comparison, RunSummary
from tracer.records import RunRecord
from tracer.storage.base import StorageBackend
from tracer.storage.registry import open_storage

# The direction of "best", by words in a metric's name. Metrics with neither (a learning
# rate, a gradient norm, system readings, an epoch counter) have no best value.
LOWER_IS_BETTER = (
    "loss", "error", "err", "perplexity", "ppl", "wer", "cer", "mse", "mae", "rmse", "nll",
)  # fmt: skip
HIGHER_IS_BETTER = (
    "acc", "accuracy", "f1", "precision", "recall", "auc", "auroc", "bleu", "rouge", "iou",
    "map", "top1", "top5", "score", "reward", "return", "r2", "dice", "exact_match", "em",
)  # fmt: skip
MODEL_SAVED_EVENT = "model_saved"
RunNames = Union[str, Sequence[str]]  # one run or several, by id or name
PINNED_EVENT = "checkpoint_pinned"  # written by tracer.actions.pinning


def _words(metric: str) -> set[str]:
    lowered = metric.lower()
    return set(re.split(r"[^a-z0-9]+", lowered)) | {lowered.rsplit("/", 1)[-1]}


def lower_is_better(metric: str) -> bool:
    """Losses and errors: the best value is the lowest."""
    if metric.startswith(("grad/", "system/", "optimizer/", "_")) or ".grad/" in metric:
        return False
    lowered = metric.lower()
    return "loss" in lowered or bool(_words(metric) & set(LOWER_IS_BETTER))


def best_direction(metric: str) -> str | None:
    """ "min" for losses and errors, "max" for accuracy-like metrics, None for the rest."""
    if lower_is_better(metric):
        return "min"
    if metric.startswith(("grad/", "system/", "optimizer/", "_", "rank/")) or ".grad/" in metric:
        return None
    return "max" if _words(metric) & set(HIGHER_IS_BETTER) else None


class QueryEngine:
    """Read-only questions about the runs in one storage location."""

    def __init__(
        self, storage_path: str = "./.tracer", storage: Optional[StorageBackend] = None
    ) -> None:
        self.storage = storage if storage is not None else open_storage(storage_path)

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------
    def resolve_run(self, run: str) -> RunRecord:
        """The run with this id, or the one run with this name."""
        return resolve_run(self.storage, run)

    def list_runs(
        self,
        project_name: Optional[str] = None,
        *,
        status: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> list[RunRecord]:
        return self.storage.list_runs(project_name, status=status, tag=tag)

    def get_metric_history(self, run: str, metric: str) -> dict[str, list[Any]]:
        """{"steps": [...], "values": [...]} of one metric."""
        series = self.storage.get_metric_timeseries(self.resolve_run(run)["run_id"], metric)
        return {"steps": list(series["steps"]), "values": list(series["values"])}

    # -- summaries --------------------------------------------------------------------------
    def get_run_summary(self, run_id: str) -> RunSummary:
        """Status, steps, duration, final and best metrics, anomaly counts, config, tags (a
        dict; in a notebook, a table with a sparkline per metric)."""
        run = self.resolve_run(run_id)
        rid = run["run_id"]
        metrics = [m for m in self.storage.list_metrics(rid) if not m["name"].startswith("_")]
        anomalies = self.storage.get_anomalies(rid)
        counts: dict[str, int] = {}
        for anomaly in anomalies:
            counts[anomaly["anomaly_type"]] = counts.get(anomaly["anomaly_type"], 0) + 1
        end = (
            run["end_time"]
            if run["end_time"] is not None
            else (run["heartbeat"] if run["status"] != "running" else time.time())
        )
        checkpoints = self.storage.get_checkpoints(rid)
        checkpoint_steps = sorted({c["step"] for c in checkpoints})
        summary = {
            "run_id": rid,
            "run_name": run["run_name"],
            "project_name": run["project_name"],
            "status": run["status"],
            "error": run["error"],
            "total_steps": run["total_steps"],
            "start_time": run["start_time"],
            "end_time": run["end_time"],
            "duration": (end or run["start_time"]) - run["start_time"],
            "final_metrics": {m["name"]: m["last_value"] for m in metrics},
            "best_metrics": {
                m["name"]: m["min_value"] if direction == "min" else m["max_value"]
                for m in metrics
                if (direction := best_direction(m["name"])) is not None
            },
            "anomaly_counts": counts,
            "anomalies": len(anomalies),
            "first_anomaly": anomaly_dict(anomalies[0], checkpoint_steps) if anomalies else None,
            "checkpoints": len(checkpoints),
            "summary": {
                key: value
                for event in self.storage.get_events(rid, "summary")
                for key, value in event["data"].items()
            },
            "config": run["config"],
            "tags": run["tags"],
            "notes": run["notes"],
        }
        return RunSummary(summary, self.storage.get_metric_arrays)

    def compare_runs(
        self, run_id1: str, run_id2: str, metrics: Sequence[str], tolerance: float = 0.05
    ) -> Comparison:
        """Per metric: final, min, max and mean of each run, the final delta (run2 - run1),
        and the first common step where they differ by more than `tolerance` (relative): a
        dict, in a notebook a table with both curves."""
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        first, second = self.resolve_run(run_id1), self.resolve_run(run_id2)
        result: dict[str, Any] = {"run1": first["run_id"], "run2": second["run_id"], "metrics": {}}
        summaries_a = {m["name"]: m for m in self.storage.list_metrics(first["run_id"])}
        summaries_b = {m["name"]: m for m in self.storage.list_metrics(second["run_id"])}
        for metric in metrics:
            steps_a, values_a = self.storage.get_metric_arrays(first["run_id"], metric)
            steps_b, values_b = self.storage.get_metric_arrays(second["run_id"], metric)
            a = {"steps": steps_a, "values": values_a}
            b = {"steps": steps_b, "values": values_b}
            stats_a = describe(values_a, summaries_a.get(metric))
            stats_b = describe(values_b, summaries_b.get(metric))
            result["metrics"][metric] = {
                "run1": stats_a,
                "run2": stats_b,
                "delta": stats_b["final"] - stats_a["final"],
                "first_divergence_step": first_divergence_between(a, b, tolerance),
            }
        return Comparison(result, self.storage.get_metric_arrays)

    # -- runs as data (analysis/frames.py) --------------------------------------------------
    def to_arrow(self, runs: RunNames, metrics: Optional[Sequence[str]] = None) -> Any:
        """Every point of these runs' metrics (all but Tracer's `_` series when `metrics` is
        None), unsampled, as a pyarrow Table in long form: `run_id`, `step`, `metric`,
        `value`, `time`, `rank` (see `tracer.analysis.frames`). Needs
        `tracer-core[frames]`."""
        return frames.long_table(self.storage, self._records(runs), metrics)

    def arrow_batches(
        self, runs: RunNames, metrics: Optional[Sequence[str]] = None
    ) -> Iterator[Any]:
        """`to_arrow`'s table as a stream of record batches, one per (run, metric) history,
        for results too large to hold (writing Parquet batch by batch)."""
        return frames.iter_long_batches(self.storage, self._records(runs), metrics)

    def to_pandas(
        self, runs: RunNames, metrics: Optional[Sequence[str]] = None, wide: bool = False
    ) -> Any:
        """`to_arrow` as a pandas DataFrame, or with `wide` one row per (run, step), `time`,
        and one column per metric. Needs `tracer-core[pandas]`."""
        frames.require("pandas", "to_pandas")
        return pandas_frames.pandas_frame(self.storage, self._records(runs), metrics, wide)

    def to_polars(
        self, runs: RunNames, metrics: Optional[Sequence[str]] = None, wide: bool = False
    ) -> Any:
        """`to_arrow` as a polars DataFrame (wide as in `to_pandas`, a missing point null).
        Needs `tracer-core[polars]`."""
        frames.require("polars", "to_polars")
        return frames.polars_frame(self.storage, self._records(runs), metrics, wide)

    def runs_frame(self, project: Optional[str] = None, *, as_: str = "pandas") -> Any:
        """One row per run (of `project`, or every run), newest first: status, duration,
        config values flattened as `config.<key>` columns, logged summary, final and best
        values, anomaly counts (`tracer.analysis.runs_table`): a pandas DataFrame, or with
        `as_="arrow"` a pyarrow Table, with `as_="polars"` a polars DataFrame."""
        if as_ not in runs_table.FORMATS:
            raise ValueError(f"as_ must be one of {', '.join(runs_table.FORMATS)}, got {as_!r}")
        if as_ != "arrow":
            frames.require(as_, "runs_frame")
        table = runs_table.runs_table(self.storage, project, best_direction)
        return runs_table.convert(table, as_)

    def _records(self, runs: RunNames) -> list[RunRecord]:
        """The runs named (ids or names), in the order given, each once."""
        names = [runs] if isinstance(runs, str) else list(runs)
        records = [self.resolve_run(name) for name in names]
        return list({record["run_id"]: record for record in records}.values())

    # -- anomalies and checkpoints ----------------------------------------------------------
    def get_anomalies(self, run: str, anomaly_types: Optional[Sequence[str]] = None) -> AnomalyList:
        """The run's anomaly episodes in step order (a list of dicts; in a notebook, a table
        with each subject's curve and the episode's start marked)."""
        rid = self.resolve_run(run)["run_id"]
        steps = sorted({c["step"] for c in self.storage.get_checkpoints(rid)})
        found = [anomaly_dict(a, steps) for a in self.storage.get_anomalies(rid, anomaly_types)]
        return AnomalyList(found, self.storage.get_metric_arrays)

    def find_anomalous_checkpoints(
        self, run_id: str, anomaly_types: Optional[Sequence[str]] = None
    ) -> list[dict[str, Any]]:
        """Checkpoints that have anomalies linked to them (their nearest checkpoint), each with
        an `anomalies` list, in step order."""
        rid = self.resolve_run(run_id)["run_id"]
        checkpoints = self.storage.get_checkpoints(rid)
        by_step: dict[int, dict[str, Any]] = {}
        for checkpoint in checkpoints:  # an anomaly checkpoint wins over one at the same step
            if checkpoint["step"] not in by_step or checkpoint["reason"] == "anomaly":
                by_step[checkpoint["step"]] = {**checkpoint, "anomalies": []}
        steps = sorted(by_step)
        for anomaly in self.storage.get_anomalies(rid, anomaly_types):
            linked = anomaly_dict(anomaly, steps)
            if linked["checkpoint_step"] is not None:
                by_step[linked["checkpoint_step"]]["anomalies"].append(linked)
        return [by_step[s] for s in steps if by_step[s]["anomalies"]]

    def last_healthy_checkpoint(self, run: str) -> Optional[dict[str, Any]]:
        """The last model checkpoint saved (event "model_saved") before the first anomaly of
        severity warning or critical; the last one saved when there is no such anomaly.

        `pinned_path` is where Tracer keeps that save (`pin_checkpoints`): set when it was
        pinned and the pin is still on disk here, else None."""
        rid = self.resolve_run(run)["run_id"]
        serious = [a for a in self.storage.get_anomalies(rid) if a["severity"] != "info"]
        limit = serious[0]["step"] if serious else math.inf
        saves = [e for e in self.storage.get_events(rid, MODEL_SAVED_EVENT) if e["step"] < limit]
        if not saves:
            return None
        last = saves[-1]
        pinned = self.pinned_checkpoints(rid)
        same = [p for p in pinned if (p["step"], p["path"]) == (last["step"], last["data"]["path"])]
        return {"step": last["step"], **last["data"], "pinned_path": _kept_pin(same)}

    def pinned_checkpoints(self, run: str) -> list[dict[str, Any]]:
        """The checkpoints pinned for this run (event "checkpoint_pinned"), each with the
        save's `step` and `path`, its `pinned_path`, the anomaly that pinned it, and `exists`
        (whether the pin is on disk here: `tracer gc` removes pins; a copy may be under way)."""
        rid = self.resolve_run(run)["run_id"]
        return [
            {"step": e["step"], **e["data"], "exists": os.path.exists(e["data"]["pinned_path"])}
            for e in self.storage.get_events(rid, PINNED_EVENT)
        ]


def _kept_pin(pins: list[dict[str, Any]]) -> Optional[str]:
    """The pinned path of a save still on disk (the newest pin of it), else None."""
    kept = [p["pinned_path"] for p in pins if p["exists"]]
    return str(kept[-1]) if kept else None
