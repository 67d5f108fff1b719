"""Ending a run on the writing rank: drain the writer, store the final status, release.

Called by `TrainingTracer.finish()` after the last checkpoint was queued and the collectors
closed. Each part is bounded and none raises: a run that cannot record its end is left for
readers to show as crashed once its heartbeat stops, and the failure is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from tracer.core.writes import Writer
    from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)


def record_end(
    storage: StorageBackend,
    run_id: str,
    writer: Writer,
    status: str,
    error: Optional[str],
    total_steps: int,
    drain_timeout_s: float,
    announce: Callable[[], None],
) -> None:
    """Write what is queued (up to `drain_timeout_s`), then the status, then `announce` (the
    run_end hooks), then release the storage."""
    writer.close(drain_timeout_s)
    problems = writer.summary()
    if problems:
        logger.warning("Tracer run %s ended with storage problems: %s", run_id, problems)
    report = writer.report()
    if report.catch_up_waits:
        logger.info(
            "Tracer run %s: training waited %d times, %.2f s in all, for the writer to catch"
            " up (a loop logging faster than storage writes is held within 0.5 s of it).",
            run_id,
            report.catch_up_waits,
            report.catch_up_seconds,
        )
    try:
        now = time.time()
        storage.update_run(
            run_id,
            status=status,
            end_time=now,
            heartbeat=now,
            total_steps=total_steps,
            error=error,
        )
    except Exception:
        logger.exception("Tracer could not record the end of run %s.", run_id)
    announce()
    try:
        storage.close()
    except Exception:
        logger.exception("Tracer could not close the storage of run %s.", run_id)
