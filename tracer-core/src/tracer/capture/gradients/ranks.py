"""Per-rank gradient summaries of a distributed job, gathered on rank 0.

Every rank that traces keeps one tiny row per captured optimizer step: its gradient norm and
its peak memory. Rank 0 stores them in the run as the series `rank/<r>/grad_norm`,
`rank/<r>/grad_nonfinite` and `rank/<r>/peak_memory_mb`, which is how the `rank_divergence`
detector sees one rank going non-finite or drifting from the others. Every
`rank_weight_check_interval` steps a row also carries the fingerprint of each watched
model's weights (`replicas.py`), stored as `rank/<r>/weight_fingerprint` for the
`replica_divergence` detector; rank 0 drops those of a rank whose models hold another number
of values than its own (pipeline stages are not replicas).

Which gradient norm: with a `DistributedDataParallel` model, the rank's own gradients before
the all-reduce, measured by a DDP communication hook (one norm kernel per bucket, then the
standard all-reduce); that is where a bad batch on one rank is still visible as that rank's.
Without it (another comm hook is installed, or no DDP wrapper is known), the norm captured
after synchronisation, which every rank should agree on.

Transport: the job's own key-value store (the one its process group rendezvoused with), not a
collective. A rank publishes a block of rows every `BLOCK_STEPS` captured steps and at
finish (`store.set`, a few hundred bytes); rank 0 takes the blocks that are there without
waiting (`store.check`), and at finish waits up to `FINISH_WAIT_S` for the last ones of the
ranks that announced themselves when they started. A rank that never traces just has no
rows, so tracing on rank 0 only can never hang a job or slow its end. The
device rows are copied asynchronously and published one block later, so no rank waits on
its device either.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.gradients.replicas import (
    Fingerprint,
    Mark,
    WeightFingerprints,
    fingerprint_series,
    host_marks,
    like_rank_zero,
)
from tracer.capture.transfer import HostCopy, copy_to_host
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)

BLOCK_STEPS = 64
FINISH_WAIT_S = 15.0
_POLL_S = 0.02
SOURCE_LOCAL = "local"  # the rank's own gradients, before the all-reduce (DDP comm hook)
SOURCE_SYNCED = "synchronized"  # the gradients as captured, after the all-reduce
_instances = itertools.count()  # the n-th summaries of this process: the same n on every rank


def default_store() -> Any:
    """The default process group's key-value store, or None without a process group."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        logger.debug("no key-value store of the process group", exc_info=True)
        return None


def peak_memory_mb(device: Any) -> float:
    """The allocator's peak on a CUDA device, else the process's peak resident memory."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # KiB on Linux


def series_names(rank: int) -> tuple[str, str, str]:
    return (f"rank/{rank}/grad_norm", f"rank/{rank}/grad_nonfinite", f"rank/{rank}/peak_memory_mb")


@dataclass
class _Block:
    """A block of rows on its way to the host: the norms, and the fingerprints taken."""

    index: int
    norms: HostCopy
    steps: list[int]
    peaks: list[float]
    marks: list[tuple[int, Fingerprint]]
    values: Optional[HostCopy]  # the marks' values, concatenated

    def host_marks(self) -> list[Mark]:
        return host_marks(self.marks, self.values)


class RankSummaries:
    """One rank's rows, published to (rank > 0) or gathered by (rank 0) the job's store."""

    def __init__(self, run: RunHandle, rank: int, world_size: int, store: Any) -> None:
        self._run = run
        self.rank = rank
        self.world_size = world_size
        self._store = store  # held: it outlives destroy_process_group
        self._prefix = f"tracer/{next(_instances)}/"
        self.source = SOURCE_SYNCED
        self._ring: Any = None
        self._steps: list[int] = []
        self._peaks: list[float] = []
        self._block = 0  # blocks published (rank > 0) or taken of this rank (rank 0)
        self._in_flight: Optional[_Block] = None
        interval = run.config.rank_weight_check_interval
        self.weights = WeightFingerprints(interval) if interval else None
        self._marks: list[tuple[int, Fingerprint]] = []  # fingerprints of the open block
        self._staged_mark: Optional[tuple[int, Fingerprint]] = None
        self._local_sumsq: Any = None
        self._local_seen = False
        self._staged: Any = None
        self._announced = False
        self._received = {r: 0 for r in range(1, world_size)}  # rank 0: blocks taken per rank
        self._unlike: set[int] = set()  # rank 0: ranks whose models are not like its own
        self._closed = False
        if rank > 0:  # rank 0 waits at finish only for ranks that said they trace
            self._publish(f"{self._prefix}{rank}/alive", "1")

    # -- the DDP communication hook (training thread, inside backward) -----------------------
    def attach_data_parallel(self, ddp_model: Any) -> bool:
        """Measure this rank's gradients before DDP's all-reduce; False when DDP already has a
        communication hook (then the synchronised norm is used)."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def local_norm_then_allreduce(state: Any, bucket: Any) -> Any:
            import torch

            buffer = bucket.buffer()
            square = torch.linalg.vector_norm(buffer, dtype=torch.float32).square()
            if self._local_sumsq is None or self._local_sumsq.device != square.device:
                self._local_sumsq = torch.zeros((), dtype=torch.float32, device=square.device)
            self._local_sumsq.add_(square)
            self._local_seen = True
            return default_hooks.allreduce_hook(state, bucket)

        # DDP checks the hook's annotations against its own types; postponed (string)
        # annotations would fail that check, and the hook needs none.
        local_norm_then_allreduce.__annotations__ = {}
        try:
            ddp_model.register_comm_hook(None, local_norm_then_allreduce)
        except Exception as error:  # only one hook per DDP model, set before backward
            logger.info(
                "Tracer keeps the synchronised gradient norm per rank (%s): %s",
                type(ddp_model).__name__,
                error,
            )
            return False
        self.source = SOURCE_LOCAL
        if self._announced:
            self._announce()
        return True

    def _announce(self) -> None:
        self._announced = True
        event: EventWrite = {
            "step": self._run.current_step,
            "kind": "rank_summaries",
            "data": {"world_size": self.world_size, "grad_norm": self.source},
        }
        self._run.submit_background(Collected([], [event]))

    # -- per captured step (training thread) --------------------------------------------------
    def stage(self, synced_norm: Any) -> None:
        """The gradients were just captured; `synced_norm` is their global norm (a device
        scalar). Taken now: the next backward may start before this step is closed. The
        weights' fingerprint too, when due: the optimizer has not applied this step yet."""
        if self._local_seen:
            self._staged = self._local_sumsq.sqrt()
            self._local_sumsq.zero_()
            self._local_seen = False
        else:
            self._staged = synced_norm
        step = self._run.current_step
        if self.weights is not None and self.weights.due(step):
            taken = self.weights.take(step)
            self._staged_mark = (step, taken) if taken is not None else None

    def record(self, step: int) -> None:
        """Step `step`, whose gradients were captured, is closed."""
        norm, self._staged = self._staged, None
        mark, self._staged_mark = self._staged_mark, None
        if norm is None:
            return
        if mark is not None and mark[0] == step:
            self._marks.append(mark)
        if not self._announced and self.rank == 0:
            self._announce()
        if self._ring is None:
            import torch

            self._ring = torch.empty((BLOCK_STEPS,), dtype=torch.float32, device=norm.device)
        self._ring[len(self._steps)].copy_(norm)
        self._steps.append(step)
        self._peaks.append(peak_memory_mb(norm.device))
        if len(self._steps) == BLOCK_STEPS:
            self._end_block()

    def _end_block(self) -> None:
        """Start the copy of the filled block; hand on the one before it (long since copied)."""
        previous, self._in_flight = self._in_flight, None
        if self._steps:
            copy = copy_to_host(self._ring[: len(self._steps)])
            values = None
            if self._marks:
                import torch

                values = copy_to_host(torch.cat([taken.values for _, taken in self._marks]))
            self._in_flight = _Block(
                self._block, copy, self._steps, self._peaks, self._marks, values
            )
            self._block += 1
            self._steps, self._peaks, self._marks = [], [], []
        if previous is not None:
            self._hand_on(previous)
        if self.rank == 0:
            self._take_ready()

    def _hand_on(self, block: _Block) -> None:
        if self.rank == 0:
            self._run.submit_background(
                lambda: _rows(
                    0, block.steps, block.norms.get().tolist(), block.peaks, block.host_marks()
                )
            )
            return
        # NaN/Infinity kept
        payload = json.dumps(
            [block.steps, block.norms.get().tolist(), block.peaks, block.host_marks()]
        )
        self._publish(f"{self._prefix}{self.rank}/{block.index}", payload)

    # -- rank 0: the other ranks' blocks -------------------------------------------------------
    def _take_ready(self) -> None:
        for rank in self._received:
            while self._try_take(rank):
                pass

    def _try_take(self, rank: int) -> bool:
        key = f"{self._prefix}{rank}/{self._received[rank]}"
        try:
            if not self._store.check([key]):
                return False
            payload = self._store.get(key).decode()
            self._store.delete_key(key)
        except Exception:
            logger.debug("Tracer could not read rank %d's summaries", rank, exc_info=True)
            return False
        self._received[rank] += 1
        steps, norms, peaks, marks = _decode_payload(payload)
        self._run.submit_background(_rows(rank, steps, norms, peaks, self._comparable(rank, marks)))
        return True

    def _comparable(self, rank: int, marks: list[Mark]) -> list[Mark]:
        """Rank `rank`'s fingerprints of the models like rank 0's (`like_rank_zero`)."""
        ours = self.weights.elements() if self.weights is not None else {}
        kept, unlike = like_rank_zero(ours, marks)
        if unlike and rank not in self._unlike:
            self._unlike.add(rank)
            logger.info(
                "Tracer: rank %d's watched models hold other parameters than rank 0's (%s);"
                " their weights are not compared.",
                rank,
                unlike,
            )
        return kept

    def _publish(self, key: str, value: str) -> None:
        try:
            self._store.set(key, value)
        except Exception:
            logger.debug("Tracer could not publish %s", key, exc_info=True)

    def _tracing_ranks(self) -> set[int]:
        tracing = set()
        for rank in self._received:
            try:
                if self._store.check([f"{self._prefix}{rank}/alive"]):
                    tracing.add(rank)
                    self._store.delete_key(f"{self._prefix}{rank}/alive")
            except Exception:
                logger.debug("rank %d's presence is unreadable", rank, exc_info=True)
        return tracing

    def _wait_for_others(self) -> None:
        deadline = time.monotonic() + FINISH_WAIT_S
        waiting = self._tracing_ranks()
        while waiting:
            for rank in list(waiting):
                while self._try_take(rank):
                    pass
                done_key = f"{self._prefix}{rank}/done"
                try:
                    if self._store.check([done_key]):
                        total = int(self._store.get(done_key).decode())
                        if self._received[rank] >= total:
                            self._store.delete_key(done_key)
                            waiting.discard(rank)
                except Exception:
                    logger.debug("rank %d's end marker is unreadable", rank, exc_info=True)
                    waiting.discard(rank)
            if not waiting:
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "Tracer did not receive the last gradient summaries of rank(s) %s within"
                    " %.0f s; the run has their rows up to then.",
                    sorted(waiting),
                    FINISH_WAIT_S,
                )
                return
            time.sleep(_POLL_S)

    def close(self) -> None:
        """Finish: publish (rank > 0) or gather (rank 0) what is left."""
        if self._closed:
            return
        self._closed = True
        self._end_block()
        self._end_block()  # the one copied last
        if self.rank == 0:
            self._wait_for_others()
        else:
            self._publish(f"{self._prefix}{self.rank}/done", str(self._block))
        # Let go of the job's store: held past finish, it outlived destroy_process_group and
        # was destroyed at interpreter exit, where its threads can abort the process.
        self._store = None


def _decode_payload(
    payload: str,
) -> tuple[list[int], list[float], list[float], list[Mark]]:
    steps, norms, peaks, marks = json.loads(payload)
    decoded: list[Mark] = [
        (
            int(step),
            [str(p) for p in prefixes],
            [int(e) for e in elements],
            [float(v) for v in values],
        )
        for step, prefixes, elements, values in marks
    ]
    return [int(s) for s in steps], [float(n) for n in norms], [float(p) for p in peaks], decoded


def _rows(
    rank: int, steps: list[int], norms: list[float], peaks: list[float], marks: list[Mark]
) -> Collected:
    norm_name, flag_name, peak_name = series_names(rank)
    rows = [
        (
            step,
            {
                norm_name: norm,
                flag_name: 0.0 if math.isfinite(norm) else 1.0,
                peak_name: peak,
            },
        )
        for step, norm, peak in zip(steps, norms, peaks, strict=True)
    ]
    fingerprints = {
        step: {
            fingerprint_series(rank, prefix): value
            for prefix, value in zip(prefixes, values, strict=True)
        }
        for step, prefixes, _, values in marks
    }
    for step, point in rows:
        point.update(fingerprints.get(step, {}))
    return Collected(rows, snapshot=False)
