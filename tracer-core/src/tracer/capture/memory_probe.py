"""Memory read at the step cadence, so a leak is seen within tens of steps, not minutes.

The system sampler reads memory every `system_metrics_interval` seconds (5 by default): a
loop that keeps 4 MB a step alive for a minute is over before the memory detector has the
samples it needs. This collector reads the process's resident memory (and, where CUDA is in
use, the caching allocator's allocated bytes) every `PROBE_STEPS` steps on the training
thread, at the cost of one `pread` of /proc/self/statm (about 2 us, so well under 1 us a
step), and stores them as `system/step/rss_mb` and `system/step/cuda_allocated_mb`.
Elsewhere than Linux it reads psutil's `memory_info()` (slower, still every `PROBE_STEPS`).
With glibc it also stores `system/step/heap_in_use_mb`, what the C allocator has handed out
and not taken back (`malloc_stats.py`), read again only when resident memory moved: the
series the leak detector reads where it exists, because a fragmented heap grows the resident
figure alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from tracer.capture.collector import Collector
from tracer.capture.malloc_stats import heap_in_use_reader
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle

logger = logging.getLogger(__name__)

PROBE_STEPS = 10
MB = 1024.0 * 1024.0
RSS_SERIES = "system/step/rss_mb"
CUDA_SERIES = "system/step/cuda_allocated_mb"
HEAP_SERIES = "system/step/heap_in_use_mb"
HEAP_REREAD_MB = 1.0


def _statm_reader() -> Optional[Callable[[], float]]:
    """Resident MB from /proc/self/statm through a file kept open; None where there is none."""
    try:
        descriptor = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
    page = os.sysconf("SC_PAGE_SIZE") / MB

    def read() -> float:
        return int(os.pread(descriptor, 128, 0).split()[1]) * page

    read.descriptor = descriptor  # type: ignore[attr-defined]
    return read


class MemoryProbe(Collector):
    """The built-in step-cadence memory collector."""

    name = "memory_probe"
    per_step = True

    def __init__(self, run: RunHandle) -> None:
        self._run = run
        self._countdown = 0
        self._read_rss = _statm_reader()
        if self._read_rss is None:
            import psutil

            process = psutil.Process(os.getpid())
            self._read_rss = lambda: process.memory_info().rss / MB
        self._read_heap = heap_in_use_reader()
        self._heap = 0.0  # the last heap reading, and the resident MB it was taken at
        self._heap_at: Optional[float] = None

    def on_step_end(self, step: int) -> None:
        if self._countdown:
            self._countdown -= 1
            return
        self._countdown = PROBE_STEPS - 1
        resident = self._read_rss()  # type: ignore[misc]
        reading = {RSS_SERIES: resident}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            reading[CUDA_SERIES] = torch.cuda.memory_allocated() / MB  # host counter, no sync
        if self._read_heap is not None:
            reading[HEAP_SERIES] = self._heap_in_use(resident)
        self._run.submit_background(Collected([(step, reading)], snapshot=False))

    def _heap_in_use(self, resident: float) -> float:
        """The heap in use, read again only when resident memory moved by `HEAP_REREAD_MB`
        since the last reading: `mallinfo2` costs tens of microseconds, and the heap cannot
        grow for long without resident memory growing too."""
        if self._heap_at is None or abs(resident - self._heap_at) >= HEAP_REREAD_MB:
            self._heap = self._read_heap()  # type: ignore[misc]
            self._heap_at = resident
        return self._heap

    def close(self) -> None:
        descriptor = getattr(self._read_rss, "descriptor", None)
        if descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._read_rss = None


def memory_probe(run: RunHandle) -> Optional[Collector]:
    """Factory registered by the built-in capture plugin; None when system tracking is off."""
    if not run.config.track_system_metrics:
        return None
    try:
        return MemoryProbe(run)
    except (ImportError, OSError) as error:
        logger.warning("Tracer reads no step-cadence memory: %s", error)
        return None
