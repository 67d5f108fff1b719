"""The training thread's side of keeping the writer close: when to wait for it, for how
long, and when a step must be dropped instead (see `tracer.core.writer`, whose `RunWriter`
derives from `CatchingUp`: the attributes below are its state).

Three bounds: the lag (the oldest step not yet written was logged at most `_max_lag` ago),
the drain (the queued points take the writer at most `MAX_DRAIN_S` by its own measured cost
per point) and the memory (the queued steps hold at most their half of the backlog bound).
Past the first two a step waits at most `MAX_CATCH_UP_S`; past the memory bound it waits
until within it, or until the write in progress is found hung. A writer that cannot be
waited for (storage failing, a write hung on a lock) is not waited for: past the memory
bound, steps are dropped and counted.
"""

from __future__ import annotations

import math
import threading
import time

STEP_BYTES = 300  # about what a queued step of a few values holds (a dict, its values)
VALUE_BYTES = 40  # and each further value (a dict slot, a float object)
MAX_CATCH_UP_S = 0.15  # the longest one wait for the lag or drain bound lasts
MAX_DRAIN_S = 0.08  # the writer's own work queued at most (what finish() waits for)
STALLED_WRITE_S = 1.0  # a write going on longer than this waits on a lock: do not wait on it


class CatchingUp:
    """Bounds checks and waits, run on the training thread every few steps."""

    _queued_steps: list[int]
    _queued_times: list[float]
    _max_lag: float
    _max_backlog_bytes: int
    _seconds_per_point: float  # the writer's cost, measured over recent flushes
    _in_flight_since: float  # logging time of the oldest step being written
    _write_started: float  # perf_counter() when the write going on began
    _failing: bool  # the last write failed
    _gave_up: bool  # a write was found hung: no waits until one lands
    _catch_up_waits: int
    _catch_up_seconds: float
    _wake: threading.Event
    _written: threading.Event  # set after each flush: a waiting loop looks again
    _thread: threading.Thread

    def _stuck(self) -> bool:
        """Storage fails, or a write hangs (waits for it were given up): the writer cannot be
        waited for, so past the bound steps are dropped."""
        return self._failing or self._gave_up

    def _over_bound(self, width: int) -> bool:
        """Whether the queued steps hold more than their half of the backlog bound, about
        (judged by the newest step's number of values)."""
        queued_bytes = len(self._queued_steps) * (STEP_BYTES + VALUE_BYTES * width)
        return queued_bytes > self._max_backlog_bytes // 2

    def _behind(self, now: float, width: int) -> bool:
        """Whether the writer is past its lag bound, or its queued work past MAX_DRAIN_S."""
        if now - self._oldest_unwritten() > self._max_lag:
            return True
        queued_points = len(self._queued_steps) * (width + 1)  # + the timestamp
        return queued_points * self._seconds_per_point > MAX_DRAIN_S

    def _oldest_unwritten(self) -> float:
        """When the oldest step not yet written was logged (inf when none waits)."""
        try:
            queued = self._queued_times[0]
        except IndexError:  # the writer took them all (a race with its slice is harmless)
            queued = math.inf
        return min(queued, self._in_flight_since)

    def _catch_up(self, width: int) -> None:
        """Wait until the writer is within its bounds again: at most MAX_CATCH_UP_S for the
        lag and drain bounds; past the memory bound, until within it or the write in progress
        is found hung. Never while storage fails or hangs, or once the writer thread is gone."""
        if self._stuck() or not self._thread.is_alive():
            return
        started = time.perf_counter()
        self._catch_up_waits += 1
        self._wake.set()
        while not self._failing:
            self._written.clear()
            over = self._over_bound(width)
            if not over and not self._behind(time.time(), width):
                break
            now = time.perf_counter()
            if now - self._write_started > STALLED_WRITE_S:
                self._gave_up = True  # a write hangs (a lock): no more waits until one lands
                break
            if now - started >= MAX_CATCH_UP_S and not over:
                break  # the next check, LAG_CHECK_EVERY steps on, waits again if need be
            self._written.wait(0.02)
        self._catch_up_seconds += time.perf_counter() - started
