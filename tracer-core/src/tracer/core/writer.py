"""The run's writer: turns closed steps into batched storage writes, off the training thread.

The training thread only appends to a list (atomic under the GIL, no lock) and, once
`write_buffer_size` items are waiting, sets an event. A daemon thread wakes on that event or
every `flush_interval` seconds, converts values (tensors are read here), runs the collectors'
background functions (device read-backs happen here), and writes the batch in one storage
transaction. With `async_writes=False` the same flush runs inline on `submit`.

Keeping up, bounded memory, nothing lost silently. A loop that logs faster than storage takes
it would grow the backlog without bound (in memory, in what SIGKILL loses, in what finish()
writes), so `submit_step` checks every `LAG_CHECK_EVERY` steps whether the writer is past its
lag, drain or memory bound and waits on the training thread until it is within them, or
drops and counts steps when storage fails or hangs (`core/catching_up.py` says when and how
long). Batches storage has not accepted wait in a `Backlog`, bounded and packed
(`core/backlog.py`). Waits and drops are counted in `report()` and told at finish.

Storage errors never reach training: a failed batch is kept and retried on the next flush,
the first error is logged once, and `summary()` tells what was lost at finish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from operator import lt
from typing import Any, NamedTuple, Optional, Union

from tracer.core import lifecycle
from tracer.core.anomaly_checkpoints import AnomalyCheckpoints
from tracer.core.assembly import BatchAssembly
from tracer.core.backlog import Backlog, Batch
from tracer.core.catching_up import CatchingUp
from tracer.core.columns import (
    Columns,
    order_by_step,
    pivot,
)
from tracer.core.writes import Background, CheckpointRequest, WriteReport
from tracer.detection.runner import DetectorSet
from tracer.records import AnomalyWrite
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

DEFAULT_MAX_BACKLOG_BYTES = 64 << 20


# The queue of closed steps is three parallel lists (steps, timestamps, metric dicts) rather
# than a list of tuples: a tuple holding a dict stays tracked by the garbage collector, and
# a few hundred thousand queued tuples made full collections cost ~1 us per logged step.
# A dict of plain numbers is not tracked. Other items (checkpoints, collector data) go in
# the same list as the dicts, so order is kept; they are rare.
MAX_QUEUED = 2_000_000
# Step dicts kept for reuse once written (empty, 64 bytes each). A flat-out loop then creates
# no container per step: each new one that outlives its step counts toward the cyclic GC's
# next collection, which cost about a tenth of the loop's time, most of it on the training
# thread.
MAX_RECYCLED_DICTS = 1 << 16
LAG_PER_FLUSH_INTERVAL = 0.2  # the writer is at most this share of flush_interval behind
LAG_CHECK_EVERY = 64  # queued items between two lag checks on the training thread


class _Barrier(NamedTuple):
    done: threading.Event


_Item = Union[dict[str, Any], CheckpointRequest, Background, _Barrier]


class RunWriter(BatchAssembly, CatchingUp):
    """Owns the path from `submit()` to storage for one run."""

    def __init__(
        self,
        storage: StorageBackend,
        run_id: str,
        *,
        asynchronous: bool,
        buffer_size: int,
        flush_interval: float,
        heartbeat_interval: float,
        progress: Callable[[], int],
        on_checkpoint_written: Callable[[int, str], None],
        detectors: Optional[DetectorSet] = None,
        anomaly_sections: Callable[[int], dict[str, Any]] = lambda step: {},
        anomaly_data_pending: Callable[[int], bool] = lambda step: False,
        on_anomalies: Callable[[list[AnomalyWrite]], None] = lambda anomalies: None,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
    ) -> None:
        self._storage = storage
        self._run_id = run_id
        self._asynchronous = asynchronous
        self._buffer_size = buffer_size
        self._flush_interval = flush_interval
        self._max_lag = LAG_PER_FLUSH_INTERVAL * flush_interval
        self._heartbeat_interval = heartbeat_interval
        self._progress = progress
        self._on_checkpoint_written = on_checkpoint_written
        self._detectors = detectors
        self._anomaly_sections = anomaly_sections
        self._anomaly_checkpoints = AnomalyCheckpoints(progress, anomaly_data_pending)
        self._on_anomalies = on_anomalies
        # A list, not a deque: append is atomic under the GIL, and the writer takes a whole
        # prefix with one slice instead of popping items one by one.
        self._queue: list[_Item] = []
        self._queued_steps: list[int] = []
        self._queued_times: list[float] = []
        self._recycled: list[dict[str, Any]] = []  # empty step dicts, for submit_step to reuse
        self._max_backlog_bytes = max_backlog_bytes
        self._queue_full = False  # a write hangs and queued steps reached their bound
        self._seconds_per_point = 0.0  # the writer's cost, measured over recent flushes
        self._dropped_steps = 0
        self._wake = threading.Event()
        self._woken = False  # the training thread has set `_wake` since the writer woke
        self._written = threading.Event()  # set after each flush: a waiting loop looks again
        self._in_flight_since = math.inf  # logging time of the oldest step being written
        self._write_started = math.inf  # perf_counter() when the write going on began
        self._catch_up_waits = 0
        self._catch_up_seconds = 0.0
        self._flush_lock = lifecycle.DeferringLock()  # see there: SIGTERM in a sync write
        self._stopping = False
        self._flushing_thread: Optional[int] = None  # the thread inside `_flush`, if any
        self._latest: dict[str, float] = {}
        self._unwritten = Backlog(max_backlog_bytes // 2)  # the other half: queued steps
        self._last_heartbeat = time.time()
        self._stored_progress = progress()  # the step count stored with the run so far
        # The last step whose data detection has seen and whose new anomalies were handed to
        # `on_anomalies` (a model save up to it that no anomaly followed is healthy so far).
        self.detected_through = self._stored_progress - 1
        self._failed_flushes = 0
        self._written_points = 0
        self._bad_values = 0
        self._failed_sections: set[str] = set()
        self._first_error: Optional[str] = None
        self._failing = False  # the last write failed: training does not wait for storage
        self._gave_up = False  # a wait ran out: none until the next write lands
        self._thread = threading.Thread(
            target=self._run, name=f"tracer-writer-{run_id}", daemon=True
        )
        self._thread.start()

    # -- training thread --------------------------------------------------------------------
    def submit_step(self, step: int, timestamp: float, metrics: dict[str, Any]) -> dict[str, Any]:
        """Queue a closed step's metrics (the dict is owned by the writer from now on);
        returns an empty dict for the next step's, one already written when there is one."""
        queue = self._queue
        if self._queue_full or len(queue) >= MAX_QUEUED:
            self._dropped_steps += 1
            if self._dropped_steps % LAG_CHECK_EVERY == 0:
                self._queue_full = self._stuck() and self._over_bound(len(metrics))
            metrics.clear()
            return metrics
        width = len(metrics)  # (read now: once queued, the writer may empty it any time)
        self._queued_steps.append(step)  # before the dict: the writer slices by dict count
        self._queued_times.append(timestamp)
        queue.append(metrics)
        if not self._asynchronous:
            self._flush()
        else:
            queued = len(queue)
            if queued >= self._buffer_size and not self._woken:
                self._woken = True  # (a plain attribute: Event.is_set() costs a call per step)
                self._wake.set()
            if queued % LAG_CHECK_EVERY == 0:
                if self._behind(timestamp, width) or self._over_bound(width):
                    self._catch_up(width)
                self._queue_full = self._stuck() and self._over_bound(width)
        recycled = self._recycled  # only the writer adds, only this thread takes
        return recycled.pop() if recycled else {}

    def submit(self, item: CheckpointRequest | Background) -> None:
        self._queue.append(item)
        if not self._asynchronous:
            if self._flushing_thread == threading.get_ident():
                return  # from inside a flush (a hook acting on an anomaly): the next one
            self._flush()
        elif len(self._queue) >= self._buffer_size and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far is written (or has failed and is kept)."""
        if not self._thread.is_alive():
            self._flush()
            return True
        done = threading.Event()
        self._queue.append(_Barrier(done))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float) -> bool:
        """Write what is queued and stop the thread; False if it did not finish in time."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "Tracer's writer for run %s did not finish within %.0f s; %d queued records"
                " may be lost.",
                self._run_id,
                timeout,
                len(self._queue),
            )
            return False
        return True

    def report(self) -> WriteReport:
        """What became of the data so far (see `WriteReport`)."""
        return WriteReport(
            self._written_points,
            self._unwritten.points(),
            self._unwritten.dropped_points,
            self._dropped_steps,
            self._failed_flushes,
            self._first_error,
            self._catch_up_waits,
            self._catch_up_seconds,
        )

    def summary(self) -> Optional[str]:
        """What went wrong in the background, for the finish report; None if nothing."""
        report = self.report()
        if not (report.failed_writes or report.lost or self._bad_values):
            return None
        return (
            f"{report.failed_writes} flushes failed (first error: {report.first_error});"
            f" {report.points_written} points written, {report.points_unwritten} never"
            f" written (lost), {report.points_dropped} dropped to bound memory,"
            f" {self._bad_values} values unreadable, {report.steps_dropped} steps dropped"
            " because the queue was full"
        )

    @property
    def latest_metrics(self) -> dict[str, float]:
        return dict(self._latest)

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._woken = False
            try:
                self._flush()
            except Exception:  # never let the thread die: it would stall finish()
                logger.exception("Tracer's writer hit an unexpected error; it keeps going.")
            if self._stopping and not self._queue:
                self._finish_detection()
                return

    def _flush(self) -> None:
        with self._flush_lock:
            self._flushing_thread = threading.get_ident()
            barriers: list[_Barrier] = []
            try:
                self._in_flight_since = self._oldest_unwritten()
                started = time.perf_counter()
                barriers, points = self._drain()
                self._write_unwritten()
                if points > 1000 and not self._failing:  # a cost per point worth trusting
                    cost = (time.perf_counter() - started) / points
                    self._seconds_per_point = 0.7 * self._seconds_per_point + 0.3 * cost
            finally:
                self._in_flight_since = math.inf
                self._flushing_thread = None
                self._written.set()
            for barrier in barriers:
                barrier.done.set()

    def _write_unwritten(self) -> None:
        """Write the batches waiting, oldest first, until one fails; else a heartbeat when due."""
        now = time.time()
        heartbeat_due = now - self._last_heartbeat >= self._heartbeat_interval
        while self._unwritten:
            batch = self._unwritten.first()
            # total_steps goes with the data it counts, so after a kill it is never
            # ahead of the steps stored
            progress = batch.progress  # batches are taken in order: it never goes back
            run_fields = {"heartbeat": now, "total_steps": progress}
            self._write_started = time.perf_counter()
            try:
                self._storage.write_batch(
                    self._run_id,
                    batch.points,
                    batch.checkpoints,
                    run_fields,
                    events=batch.events,
                    samples=batch.samples,
                    anomalies=batch.anomalies,
                )
            except Exception as error:
                self._record_failure(error)
                self._unwritten.failed()
                break
            finally:
                self._write_started = math.inf
            self._failing = self._gave_up = False
            self._unwritten.written()
            self._written_points += batch.size()
            self._last_heartbeat = now
            self._stored_progress = progress
            heartbeat_due = False
            for checkpoint in batch.checkpoints:
                self._on_checkpoint_written(checkpoint["step"], checkpoint["reason"])
            if batch.opened:
                self._on_anomalies(batch.opened)
            self.detected_through = progress - 1  # after the anomalies were acted on
        else:
            if heartbeat_due:
                try:
                    self._storage.update_run(self._run_id, heartbeat=now)
                    self._last_heartbeat = now
                except Exception as error:
                    self._record_failure(error)

    def _drain(self) -> tuple[list[_Barrier], int]:
        """Move queued items into a batch at the end of `_unwritten`; return the barriers seen
        and the batch's number of points."""
        barriers: list[_Barrier] = []
        if not self._queue and not self._anomaly_checkpoints.waiting:
            return barriers, 0
        progress = self._progress()  # read first: every step it counts is queued already
        batch = Batch(Columns(), [], [], [], [], [], progress)
        queue = self._queue
        count = len(queue)
        items = queue[:count]
        del queue[:count]
        dicts: list[dict[str, Any]] = []
        collected: set[str] = set()  # series that collector rows went into
        taken = 0  # steps and timestamps consumed so far
        for item in items:
            if type(item) is dict:
                dicts.append(item)
                continue
            taken = self._pivot_steps(batch, dicts, taken)
            dicts = []
            if type(item) is Background:
                collected.update(self._add_collected(batch, item.source))
            elif type(item) is CheckpointRequest:
                batch.checkpoints.append(self._checkpoint(item, batch))
            elif type(item) is _Barrier:
                barriers.append(item)
        taken = self._pivot_steps(batch, dicts, taken)
        logged = self._queued_steps[:taken]
        del self._queued_steps[:taken]
        del self._queued_times[:taken]
        # Steps logged in order (the usual case) leave every series built from them in
        # order: only series with collector rows need a look.
        ascending = all(map(lt, logged, logged[1:]))
        order_by_step(batch.points, only=collected if ascending else None)
        if self._detectors is not None:
            self._detect(batch)
        if not batch.empty():
            self._unwritten.add(batch)
        return barriers, batch.size()

    def _detect(self, batch: Batch) -> None:
        """Online detection over this batch; new episodes' steps get anomaly checkpoints when
        `AnomalyCheckpoints` says they are ready (see there)."""
        assert self._detectors is not None
        found = self._detectors.feed(batch.points, batch.events, batch.checkpoints)
        batch.anomalies.extend(found)
        batch.opened.extend(self._anomaly_checkpoints.open(found, batch.points))
        for step, metrics in self._anomaly_checkpoints.ready(stopping=self._stopping):
            request = CheckpointRequest(step, time.time(), "anomaly", self._anomaly_sections(step))
            checkpoint = self._checkpoint(request, batch)
            checkpoint["metrics"].update(metrics)
            batch.checkpoints.append(checkpoint)

    def _finish_detection(self) -> None:
        """The run ends: close the episodes still open, and write them."""
        if self._detectors is None:
            return
        try:
            closing = self._detectors.finish()
            if closing:  # some may be new (a plateau judged at the end): announced too
                announce = self._anomaly_checkpoints.open(closing, Columns(), checkpoints=False)
                self._unwritten.add(
                    Batch(Columns(), [], [], [], closing, announce, self._stored_progress)
                )
                self._flush()
        except Exception:
            logger.exception("Tracer could not close the open anomaly episodes.")

    def _pivot_steps(self, batch: Batch, dicts: list[dict[str, Any]], taken: int) -> int:
        if dicts:
            end = taken + len(dicts)
            self._bad_values += pivot(
                self._queued_steps[taken:end],
                self._queued_times[taken:end],
                dicts,
                batch.points,
                self._latest,
            )
            room = MAX_RECYCLED_DICTS - len(self._recycled)
            if room > 0:
                reused = dicts[:room]
                for metrics in reused:
                    metrics.clear()
                self._recycled.extend(reused)
            return end
        return taken

    def _record_failure(self, error: BaseException) -> None:
        self._failing = True
        self._failed_flushes += 1
        if self._first_error is None:
            self._first_error = f"{type(error).__name__}: {error}"
            logger.warning(
                "Tracer could not write to storage (%s); training goes on, the data is kept"
                " and retried, and finish() reports what was lost.",
                self._first_error,
            )
