"""`retention_days`: delete a project's ended runs that are older than the limit.

Runs when a run of the project starts (in `tracer.init`, after the new run is stored), and
only on that project's runs. A run counts as ended when its effective status is not
"running" (a crashed run counts, since its process is gone); its age is taken from its end
time, or its last heartbeat if it never ended cleanly. Running runs are never deleted.
Every deletion is logged at WARNING with the run's id and name; `retention_days=0` keeps all.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from tracer.records import RunRecord
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0


def expired_runs(
    storage: StorageBackend, project_name: str, retention_days: int, now: Optional[float] = None
) -> list[RunRecord]:
    if retention_days <= 0:
        return []
    cutoff = (time.time() if now is None else now) - retention_days * SECONDS_PER_DAY
    expired = []
    for run in storage.list_runs(project_name):
        if run["status"] == "running":
            continue
        ended = run["end_time"] or run["heartbeat"] or run["start_time"]
        if ended < cutoff:
            expired.append(run)
    return expired


def apply_retention(
    storage: StorageBackend, project_name: str, retention_days: int, now: Optional[float] = None
) -> list[str]:
    """Delete expired runs; returns their ids. Each deletion is logged."""
    deleted = []
    for run in expired_runs(storage, project_name, retention_days, now):
        storage.delete_run(run["run_id"])
        deleted.append(run["run_id"])
        logger.warning(
            "Retention (retention_days=%d): deleted run %s (%r, %s) of project %r.",
            retention_days,
            run["run_id"],
            run["run_name"],
            run["status"],
            project_name,
        )
    return deleted
