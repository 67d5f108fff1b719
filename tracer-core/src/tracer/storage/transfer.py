"""Copying runs between two stores of any backends (`tracer copy SRC DST [RUN...]`): how a
team moves its local SQLite runs into PostgreSQL, or takes runs home from it.

A run is copied whole through the storage interface only: its row (id, name, config, tags,
settings, status, times), every metric history as stored (NaN and +-Inf bit for bit), its
checkpoints, events (model saves among them), batch samples and anomaly episodes.

Copying is idempotent. A run the target already holds in the same state (status, steps, end
and last heartbeat) is left as it is; one it holds in another state (the source went on
since) is replaced by a fresh copy, unless the target's copy has gone further than the
source's (more steps, or a later heartbeat: it was resumed there), which is refused. A second
copy of the same runs therefore changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from tracer.exceptions import StorageError
from tracer.records import RunRecord
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

POINTS_PER_WRITE = 200_000  # a long history goes over in pieces of this many points
_STATE = ("status", "total_steps", "end_time", "heartbeat")


@dataclass(frozen=True)
class Copied:
    """What became of one run: "copied", "replaced" or "up to date"; points copied."""

    run_id: str
    run_name: str
    outcome: str
    points: int


def copy_runs(
    source: StorageBackend, target: StorageBackend, runs: Optional[Sequence[RunRecord]] = None
) -> list[Copied]:
    """Copy `runs` (default: every run of `source`) into `target`, oldest first."""
    chosen = list(reversed(source.list_runs())) if runs is None else list(runs)
    return [copy_run(source, target, run) for run in chosen]


def copy_run(source: StorageBackend, target: StorageBackend, run: RunRecord) -> Copied:
    run_id = run["run_id"]
    existing = target.get_run(run_id)
    outcome = "copied"
    if existing is not None:
        if all(existing[key] == run[key] for key in _STATE):  # type: ignore[literal-required]
            return Copied(run_id, run["run_name"], "up to date", 0)
        if _ahead(existing, run):
            raise StorageError(
                f"run {run_id} ({run['run_name']!r}) has gone further in the target store than"
                " in the source (it was resumed there); Tracer does not replace it"
            )
        target.delete_run(run_id)
        outcome = "replaced"
    target.create_run(
        run_id,
        run["project_name"],
        run["run_name"],
        run["start_time"],
        run["config"],
        tags=run["tags"],
        notes=run["notes"],
        host=run["host"],
        pid=run["pid"],
        rank=run["rank"],
        world_size=run["world_size"],
        heartbeat_interval=run["heartbeat_interval"],
        settings=run["settings"],
    )
    points = 0
    for metric in source.list_metrics(run_id):
        steps, values = source.get_metric_arrays(run_id, metric["name"])
        for start in range(0, len(steps), POINTS_PER_WRITE):
            end = start + POINTS_PER_WRITE
            target.write_metrics(run_id, {metric["name"]: (steps[start:end], values[start:end])})
        points += len(steps)
    target.write_batch(
        run_id,
        {},
        [
            {
                "step": c["step"],
                "timestamp": c["timestamp"],
                "reason": c["reason"],
                "metrics": c["metrics"],
                "gradient_stats": c["gradient_stats"],
                "system_metrics": c["system_metrics"],
                "extra": c["extra"],
            }
            for c in source.get_checkpoints(run_id)
        ],
        events=[
            {"step": e["step"], "kind": e["kind"], "data": e["data"]}
            for e in source.get_events(run_id)
        ],
        samples=[
            {
                "step": s["step"],
                "reason": s["reason"],
                "role": s["role"],
                "name": s["name"],
                "shape": s["shape"],
                "dtype": s["dtype"],
                "values": s["values"],
                "truncated": s["truncated"],
            }
            for s in source.get_samples(run_id)
        ],
        anomalies=source.get_anomalies(run_id),
    )
    # the state last, so a copy cut short never reads as up to date
    target.update_run(
        run_id,
        status=run["status"],  # a run that reads "crashed" is stored so
        end_time=run["end_time"],
        heartbeat=run["heartbeat"],
        total_steps=run["total_steps"],
        error=run["error"],
    )
    logger.info("Copied run %s (%r): %d points.", run_id, run["run_name"], points)
    return Copied(run_id, run["run_name"], outcome, points)


def _ahead(existing: RunRecord, run: RunRecord) -> bool:
    """The target's copy has steps or a heartbeat the source's has not."""
    return existing["total_steps"] > run["total_steps"] or (existing["heartbeat"] or 0.0) > (
        run["heartbeat"] or 0.0
    )
