"""System metrics: a daemon thread samples the machine; the training thread never waits on it.

Every `system_metrics_interval` seconds the sampler thread reads, without sleeping inside a
reading (psutil's `cpu_percent(interval=None)` compares against the previous call):
- `system/process_rss_mb`, `system/process_cpu_percent`, `system/memory_used_percent`,
  `system/memory_available_mb` (psutil);
- per visible GPU i, through NVML (nvidia-ml-py): `system/gpu{i}/utilization_percent`,
  `memory_used_mb`, `memory_total_mb`, `power_watts`, `temperature_c`;
- for the current torch CUDA device: `system/torch/allocated_mb`, `reserved_mb`,
  `peak_allocated_mb` (allocator counters on the host: no device sync).
Each sample is stored as `system/...` series at the run's step when it was taken. A
checkpoint stores the latest sample, refreshed with the torch counters read at that moment.
Without a GPU or a driver the GPU fields are absent (one DEBUG line says why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.collector import Collector, Contribution
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle

logger = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


_GPU_READINGS: tuple[tuple[str, Callable[[Any, Any], float]], ...] = (
    ("utilization_percent", lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
    ("memory_used_mb", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used / MB),
    ("memory_total_mb", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total / MB),
    ("power_watts", lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
    ("temperature_c", lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, 0)),  # 0: the GPU die
)


class NvmlReader:
    """NVML handles opened once; `read()` returns {} when NVML is unavailable."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as error:  # no package, no driver, no GPU: GPU fields stay absent
            logger.debug("Tracer reads no GPU metrics: NVML unavailable (%s).", error)

    def read(self) -> dict[str, float]:
        nvml = self._nvml
        if nvml is None:
            return {}
        metrics: dict[str, float] = {}
        for index, handle in enumerate(self._handles):
            key = f"system/gpu{index}/"
            for name, read in _GPU_READINGS:
                try:
                    metrics[key + name] = float(read(nvml, handle))
                except Exception:  # some boards lack a sensor (power on MIG, for one)
                    continue
        return metrics

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def torch_memory() -> dict[str, float]:
    """The caching allocator's counters for the current CUDA device; {} without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {
        "system/torch/allocated_mb": torch.cuda.memory_allocated() / MB,
        "system/torch/reserved_mb": torch.cuda.memory_reserved() / MB,
        "system/torch/peak_allocated_mb": torch.cuda.max_memory_allocated() / MB,
    }


class SystemSampler(Collector):
    """The built-in system collector: a daemon thread, stopped (bounded join) at finish."""

    name = "system"

    def __init__(self, run: RunHandle, interval: float) -> None:
        import psutil

        self._run = run
        self._interval = interval
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # primes the counter: later calls need no sleep
        self._psutil = psutil
        self._nvml = NvmlReader()
        self._latest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tracer-system", daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, float]:
        memory = self._process.memory_info()
        machine = self._psutil.virtual_memory()
        metrics = {
            "system/process_rss_mb": memory.rss / MB,
            "system/process_cpu_percent": float(self._process.cpu_percent(None)),
            "system/memory_used_percent": float(machine.percent),
            "system/memory_available_mb": machine.available / MB,
        }
        metrics.update(self._nvml.read())
        metrics.update(torch_memory())
        return metrics

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                metrics = self.sample()
            except Exception:
                logger.debug("Tracer's system sample failed.", exc_info=True)
                continue
            self._latest = metrics
            step = self._run.current_step
            self._run.submit_background(Collected([(step, metrics)], snapshot=False))

    def checkpoint(self, step: int, reason: str) -> Contribution:
        latest = self._latest  # read once: the sampler thread replaces it as a whole
        at_checkpoint = torch_memory()
        if not latest:  # no sample yet: the writer thread takes it (or close() did)
            return {"system_metrics": lambda: {**self._sample_once(), **at_checkpoint}}
        return {"system_metrics": {**latest, **at_checkpoint}}

    def _sample_once(self) -> dict[str, float]:
        """The latest sample, taking the first one if none was taken yet."""
        if not self._latest:
            self._latest = self.sample()
        return self._latest

    def anomaly_sections(self, step: int) -> Contribution:
        return {"system_metrics": dict(self._latest)} if self._latest else {}

    def close(self) -> None:
        """Stop the thread; a checkpoint still waiting for its sample gets it before NVML shuts.

        At finish the run closes its collectors before the writer has written the last
        checkpoint, so a sample deferred to the writer would otherwise find NVML shut.
        """
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._latest:
            with contextlib.suppress(Exception):
                self._sample_once()
        self._nvml.close()


def system_collector(run: RunHandle) -> Optional[Collector]:
    """Factory registered by the built-in capture plugin; None when system tracking is off."""
    if not run.config.track_system_metrics:
        return None
    try:
        return SystemSampler(run, run.config.system_metrics_interval)
    except ImportError:
        logger.warning("track_system_metrics needs psutil (pip install psutil); skipped.")
        return None
