"""What a writer flush puts into a batch besides the steps: collectors' data and checkpoints.

`RunWriter` derives from `BatchAssembly` (the attributes below are its state). Both run on
the writer thread, where device read-backs and other slow work belong: a collector's
background function is called here, and so is each section of a checkpoint request. A
section or a collector that fails is left out and reported once by name; the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Union

from tracer.core.backlog import Batch
from tracer.core.columns import pivot_columns
from tracer.core.writes import CheckpointRequest
from tracer.records import CheckpointWrite, Collected

logger = logging.getLogger(__name__)

_OWN_SECTIONS = ("gradient_stats", "system_metrics")  # a checkpoint's own fields


class BatchAssembly:
    """Collectors' data and checkpoints into a batch; the attributes are `RunWriter`'s."""

    _latest: dict[str, float]  # each metric's newest value, for checkpoints
    _bad_values: int  # values float() could not read, left out
    _failed_sections: set[str]  # sections and collectors already reported failing

    def _add_collected(
        self, batch: Batch, source: Union[Collected, Callable[[], Collected]]
    ) -> set[str]:
        """Add a collector's data to the batch; returns the names of the series it added to."""
        try:
            collected = source if isinstance(source, Collected) else source()
        except Exception as error:
            self._report_section_failure("collector data", error)
            return set()
        names: set[str] = set()
        if collected.rows:
            steps = [step for step, _ in collected.rows]
            dicts = [metrics for _, metrics in collected.rows]
            names.update(*dicts)
            latest = self._latest if collected.snapshot else None
            self._bad_values += pivot_columns(steps, dicts, batch.points, latest)
        batch.events.extend(collected.events)
        batch.samples.extend(collected.samples)
        return names

    def _checkpoint(self, request: CheckpointRequest, batch: Batch) -> CheckpointWrite:
        checkpoint: CheckpointWrite = {
            "step": request.step,
            "timestamp": request.timestamp,
            "reason": request.reason,
            "metrics": dict(self._latest),
            "gradient_stats": {},
            "system_metrics": {},
            "extra": {},
        }
        for name, section in request.sections.items():
            try:
                value = section() if callable(section) else section
            except Exception as error:
                self._report_section_failure(name, error)
                continue
            if name in _OWN_SECTIONS:
                checkpoint[name] = value  # type: ignore[literal-required]
            elif name == "samples":
                batch.samples.extend(value)
            else:
                checkpoint["extra"][name] = value
        return checkpoint

    def _report_section_failure(self, name: str, error: BaseException) -> None:
        if name not in self._failed_sections:
            self._failed_sections.add(name)
            logger.warning("Tracer could not collect %s: %s: %s", name, type(error).__name__, error)
