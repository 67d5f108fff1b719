"""One `halt_on` decision for every rank of a distributed job.

Rank 0 finds anomalies; if it alone stopped, the other ranks would wait forever in their next
all-reduce. So in a job with `halt_on` set, rank 0 publishes "stop at step N" in the job's
key-value store (N = the step it found the anomaly at + `LEAD_STEPS`), every rank looks for
that key every `CHECK_EVERY` steps, and all of them stop at step N: `should_stop` turns
True and `tracer.step()` raises `TrainingHalted` on the same step everywhere. `LEAD_STEPS`
leaves room for the ranks' small drift and the check interval; the cost is one store lookup
per `CHECK_EVERY` steps, and nothing at all in a job without `halt_on`.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Optional

logger = logging.getLogger(__name__)

CHECK_EVERY = 8
LEAD_STEPS = 3 * CHECK_EVERY
_instances = itertools.count()  # the n-th run of this process: the same n on every rank


class HaltAgreement:
    """The shared stop step of one run, through the store of its process group."""

    def __init__(self, store: Any, rank: int) -> None:
        self._store = store
        self.rank = rank
        self._key = f"tracer/halt/{next(_instances)}"
        self.halt_at: Optional[int] = None
        self._proposed = False

    @classmethod
    def for_job(cls, rank: int, world_size: int) -> Optional[HaltAgreement]:
        if world_size <= 1:
            return None
        from tracer.capture.gradients.ranks import default_store

        store = default_store()
        if store is None:
            logger.warning(
                "Tracer: halt_on in a job of %d ranks without a torch.distributed process group"
                " when the run started; only this rank can stop.",
                world_size,
            )
            return None
        return cls(store, rank)

    def tick(self, step: int, halt_found: bool) -> None:
        """Called as each step closes, on every rank."""
        if self.halt_at is not None:
            return
        if halt_found and self.rank == 0 and not self._proposed:
            self._proposed = True
            self.halt_at = step + LEAD_STEPS
            try:
                self._store.set(self._key, str(self.halt_at))
            except Exception:
                logger.exception("Tracer could not tell the other ranks to stop.")
            logger.warning("Tracer halts training on every rank at step %d.", self.halt_at)
            return
        if step % CHECK_EVERY:
            return
        try:
            if self._store.check([self._key]):
                self.halt_at = int(self._store.get(self._key).decode())
        except Exception:
            logger.debug("Tracer could not read the halt decision", exc_info=True)

    def stops_at(self, step: int) -> bool:
        return self.halt_at is not None and step >= self.halt_at
