"""The built-in gradient collector: one `ModelWatch` per `tracer.watch()` call, plus the
per-rank summaries of a distributed job (`tracer.capture.gradients.ranks`, with the weight
fingerprints of every watched model, `replicas.py`), created at the first
`watch()` of a process whose world size is above 1 (the rank is looked up then, never at
import, so a process group set up after `tracer.init()` is still found), and with
`on_nonfinite="skip"` the run's skip decisions (`tracer.capture.gradients.skipping`).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.collector import Collector, Contribution
from tracer.capture.gradients.model_survey import layer_summary, weight_scales
from tracer.capture.gradients.ranks import RankSummaries, default_store
from tracer.capture.gradients.skipping import NonfiniteSkip
from tracer.capture.gradients.watch import ModelWatch
from tracer.distributed import rank_and_world_size
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)


def is_data_parallel(model: Any) -> bool:
    """Whether `model` is a `torch.nn.parallel.DistributedDataParallel` wrapper."""
    parallel = sys.modules.get("torch.nn.parallel")
    ddp = getattr(parallel, "DistributedDataParallel", None)
    return ddp is not None and isinstance(model, ddp)


class GradientCapture(Collector):
    """The built-in gradient collector: one `ModelWatch` per `tracer.watch()` call."""

    name = "gradients"

    def __init__(self, run: RunHandle) -> None:
        self._run = run
        self._watches: list[ModelWatch] = []
        self.ranks: Optional[RankSummaries] = None
        self.skip = NonfiniteSkip(run, self._watches) if run.config.on_nonfinite == "skip" else None

    def watch(
        self, model: Any, optimizer: Optional[Any] = None, capture_point: Optional[str] = None
    ) -> None:
        if any(w.model is model for w in self._watches):
            logger.warning(
                "tracer.watch: %s is already watched; ignoring the second call.",
                type(model).__name__,
            )
            return
        prefix = f"m{len(self._watches)}." if self._watches else ""
        watch = ModelWatch(self._run, model, optimizer, prefix, capture_point)
        self._watches.append(watch)
        self.per_step = True
        event: EventWrite = {
            "step": self._run.current_step,
            "kind": "gradient_capture",
            "data": {
                "point": watch.point,
                "model": type(model).__name__,
                "prefix": prefix,
                "layers": watch.names,
                **layer_summary(model),
            },
        }
        self._run.submit_background(lambda: Collected([], [event]))
        if self._run.config.update_check_interval:
            weight_scales(self._run, model)
        logger.info(
            "Tracer watches %d parameters of %s at %s.",
            len(watch.names),
            type(model).__name__,
            watch.point,
        )
        if self.skip is not None and capture_point is None:
            if optimizer is not None:
                self.skip.guard(optimizer)  # after this watch's capture hook
            else:
                logger.warning(
                    'Tracer: on_nonfinite="skip" needs tracer.watch(model, optimizer=...):'
                    " without the optimizer no step of %s is skipped.",
                    type(model).__name__,
                )
        if len(self._watches) == 1:
            self._start_rank_summaries()
        if self.ranks is not None and self.ranks.weights is not None:
            self.ranks.weights.add(prefix, model)
        if is_data_parallel(model):
            self.attach_data_parallel(model)

    def _start_rank_summaries(self) -> None:
        rank, world_size = rank_and_world_size()
        if world_size <= 1:
            return
        store = default_store()
        if store is None:
            logger.info(
                "Tracer sees world size %d but no torch.distributed process group: no per-rank"
                " gradient summaries.",
                world_size,
            )
            return
        self.ranks = RankSummaries(self._run, rank, world_size, store)
        self._watches[0].on_capture = self.ranks.stage

    def attach_data_parallel(self, ddp_model: Any) -> None:
        """Per-rank summaries measure this rank's gradients before DDP's all-reduce."""
        if self.ranks is not None and self.ranks.source != "local" and is_data_parallel(ddp_model):
            self.ranks.attach_data_parallel(ddp_model)

    @property
    def capture_points(self) -> list[str]:
        return [w.point for w in self._watches]

    def capture_now(self) -> None:
        for watch in self._watches:
            if watch.manual:
                watch.capture()

    def holds_open_step(self) -> bool:
        return any(watch.captured_this_step for watch in self._watches)

    def skip_nonfinite_step(self, optimizer: Any) -> bool:
        """An adapter's optimizer is about to step (its gradients captured): whether the
        step is skipped for non-finite gradients, always False unless on_nonfinite="skip"."""
        return self.skip.decide(optimizer) if self.skip is not None else False

    def optimizer_step_skipped(self) -> None:
        for watch in self._watches:
            watch.skipped()

    def on_step_end(self, step: int) -> None:
        if self.ranks is not None and self._watches[0].captured_this_step:
            self.ranks.record(step)
        for watch in self._watches:
            watch.on_step_end(step)

    def checkpoint(self, step: int, reason: str) -> Contribution:
        if not self._watches:
            return {}
        parts = [watch.checkpoint() for watch in self._watches]

        def merged() -> dict[str, dict[str, float]]:
            stats: dict[str, dict[str, float]] = {}
            for part in parts:
                stats.update(part())
            return stats

        return {"gradient_stats": merged}

    def anomaly_data_pending(self, step: int) -> bool:
        pending = False
        for watch in self._watches:
            if watch.holds(step):
                watch.drain_requested = True
                pending = True
        return pending

    def anomaly_sections(self, step: int) -> Contribution:
        stats: dict[str, dict[str, float]] = {}
        for watch in self._watches:
            stats.update(watch.anomaly_stats(step))
        return {"gradient_stats": stats} if stats else {}

    def close(self) -> None:
        if self.skip is not None:
            self.skip.close()
        for watch in self._watches:
            watch.close()
        if self.ranks is not None:
            self.ranks.close()


def gradient_collector(run: RunHandle) -> Optional[Collector]:
    """Factory registered by the built-in capture plugin; None when tracking is off."""
    return GradientCapture(run) if run.config.track_gradients else None
