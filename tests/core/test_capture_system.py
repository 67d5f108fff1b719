"""System metrics: the sampler thread's series, checkpoint sections, switch and lifetime.

Passes with or without torch installed: nothing here needs torch (the torch allocator
counters are only read when CUDA is initialised, which never happens on this CPU machine).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

import tracer
from tests.core.helpers import open_store, series
from tracer.records import CheckpointRecord

PSUTIL_KEYS = (
    "system/process_rss_mb",
    "system/process_cpu_percent",
    "system/memory_used_percent",
    "system/memory_available_mb",
)
SAMPLER_THREAD = "tracer-system"


@pytest.fixture(autouse=True)
def _needs_psutil() -> None:
    """The sampler is built on psutil (a dependency of tracer-core); skip cleanly without it."""
    pytest.importorskip("psutil")


def sampler_threads() -> list[threading.Thread]:
    """Live threads that are a run's system sampler."""
    return [t for t in threading.enumerate() if t.name == SAMPLER_THREAD and t.is_alive()]


def gpu_visible() -> bool:
    """True when NVML works and sees at least one GPU (then GPU fields may be recorded)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) > 0
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def train_for(seconds: float, *, pause: float = 0.01) -> int:
    """Log `loss` and close steps for about `seconds` of wall time; return the step count."""
    deadline = time.monotonic() + seconds
    steps = 0
    while time.monotonic() < deadline or steps < 10:
        tracer.log({"loss": 1.0 / (steps + 1)})
        tracer.step()
        steps += 1
        time.sleep(pause)
    return steps


def three_steps_before_the_first_sample() -> str:
    """A run of 3 steps, a checkpoint at each, ended long before the sampler's first reading
    (60 s): every checkpoint's system section is a reading taken for it. Returns its id."""
    run = tracer.init(
        project="p", checkpoint_interval=1, system_metrics_interval=60.0, capture_samples=0
    )
    for _ in range(3):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    return run.run_id


def checkpoints_of(run_id: str) -> list[CheckpointRecord]:
    with open_store() as store:
        return store.get_checkpoints(run_id)


def test_sampled_series_have_plausible_values_at_the_runs_steps() -> None:
    """Contract: every `system_metrics_interval` seconds the four psutil readings are stored as
    `system/...` series at the step open when they were taken, with plausible values."""
    run = tracer.init(
        project="p", checkpoint_interval=10, system_metrics_interval=0.1, capture_samples=0
    )
    steps = train_for(1.0)
    tracer.finish()

    with open_store() as store:
        stored = store.get_run(run.run_id)
        names = {m["name"] for m in store.list_metrics(run.run_id)}
    assert stored is not None and stored["total_steps"] == steps
    assert set(PSUTIL_KEYS) <= names
    cpu_ceiling = 100.0 * (os.cpu_count() or 1)
    for key in PSUTIL_KEYS:
        points = series(run.run_id, key)
        assert len(points["steps"]) >= 3, (key, points)  # ~10 samples expected in 1 s
        # The step open when the sample was taken: 0 .. total_steps (the empty step after
        # the last `step()` counts too).
        assert all(0 <= s <= steps for s in points["steps"]), (key, points["steps"])
        values = points["values"]
        if key == "system/process_rss_mb":
            assert all(1.0 < v < 1_000_000.0 for v in values), values
        elif key == "system/process_cpu_percent":
            assert all(0.0 <= v <= cpu_ceiling + 1e-6 for v in values), values
        elif key == "system/memory_used_percent":
            assert all(0.0 <= v <= 100.0 for v in values), values
        else:
            assert all(v > 0.0 for v in values), values


def test_every_checkpoint_has_a_system_section_and_system_series_stay_out_of_metrics() -> None:
    """Contract: each checkpoint's `system_metrics` holds the latest sample, and system series
    are kept out of the checkpoint's "latest metrics" (they have their own section)."""
    run = tracer.init(
        project="p", checkpoint_interval=10, system_metrics_interval=0.1, capture_samples=0
    )
    steps = train_for(1.0)
    tracer.finish()

    checkpoints = checkpoints_of(run.run_id)
    interval_steps = [c["step"] for c in checkpoints if c["reason"] == "interval"]
    assert interval_steps == list(range(10, steps, 10))
    assert checkpoints[-1]["reason"] == "finish" and checkpoints[-1]["step"] == steps - 1
    for checkpoint in checkpoints:
        system = checkpoint["system_metrics"]
        assert set(PSUTIL_KEYS) <= set(system), checkpoint
        assert system["system/process_rss_mb"] > 1.0
        assert not any(name.startswith("system/") for name in checkpoint["metrics"])
        assert "loss" in checkpoint["metrics"]


def test_a_checkpoint_before_the_first_sample_still_has_system_metrics() -> None:
    """Contract: a checkpoint taken before the sampler's first reading gets one taken for it
    (off the training thread), so no checkpoint has an empty system section."""
    run_id = three_steps_before_the_first_sample()

    checkpoints = checkpoints_of(run_id)
    assert [(c["step"], c["reason"]) for c in checkpoints] == [
        (1, "interval"),
        (2, "interval"),
        (2, "finish"),
    ]
    for checkpoint in checkpoints:
        assert set(PSUTIL_KEYS) <= set(checkpoint["system_metrics"]), checkpoint
    # The sampler never fired in 60 s, so no system series exist: the sections came from the
    # on-demand reading (the step-cadence memory probe's system/step/ series aside).
    with open_store() as store:
        names = {m["name"] for m in store.list_metrics(run_id)}
    assert not any(name.startswith("system/") and "/step/" not in name for name in names)


def test_the_finish_checkpoint_reads_the_gpu_before_nvml_shuts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (seen on an H100): a short run's last checkpoint, whose sample is taken
    for it after finish() has closed the collectors, lost its GPU fields because NVML was
    already shut by then. NVML is faked here: it reads a GPU only while open."""
    from tracer.capture import system

    class FakeNvml:
        def __init__(self) -> None:
            self.open = True

        def read(self) -> dict[str, float]:
            return {"system/gpu0/memory_total_mb": 81559.0} if self.open else {}

        def close(self) -> None:
            self.open = False

    monkeypatch.setattr(system, "NvmlReader", FakeNvml)
    run_id = three_steps_before_the_first_sample()

    checkpoints = checkpoints_of(run_id)
    assert checkpoints[-1]["reason"] == "finish"
    for checkpoint in checkpoints:
        assert checkpoint["system_metrics"]["system/gpu0/memory_total_mb"] == 81559.0


def test_no_gpu_fields_without_nvml() -> None:
    """Contract: without a GPU or an NVML driver the GPU fields are absent (not zero, not NaN)
    from the series and from checkpoints."""
    if gpu_visible():
        pytest.skip("NVML sees a GPU here: GPU fields are expected")
    run = tracer.init(
        project="p", checkpoint_interval=5, system_metrics_interval=0.1, capture_samples=0
    )
    train_for(0.5)
    tracer.finish()

    with open_store() as store:
        names = {m["name"] for m in store.list_metrics(run.run_id)}
    assert set(PSUTIL_KEYS) <= names
    assert not any(name.startswith(("system/gpu", "system/torch/")) for name in names), names
    for checkpoint in checkpoints_of(run.run_id):
        keys = set(checkpoint["system_metrics"])
        assert not any(key.startswith(("system/gpu", "system/torch/")) for key in keys), keys


def test_track_system_metrics_false_starts_nothing_and_stores_nothing() -> None:
    """Contract: `track_system_metrics=False` starts no sampler thread, stores no `system/`
    series and leaves every checkpoint's `system_metrics` empty."""
    run = tracer.init(
        project="p",
        checkpoint_interval=5,
        system_metrics_interval=0.1,
        track_system_metrics=False,
        capture_samples=0,
    )
    assert sampler_threads() == []
    steps = train_for(0.5)
    assert sampler_threads() == []
    tracer.finish()

    with open_store() as store:
        names = {m["name"] for m in store.list_metrics(run.run_id)}
    assert "loss" in names
    assert not any(name.startswith("system/") for name in names), names
    checkpoints = checkpoints_of(run.run_id)
    assert len(checkpoints) == len(range(5, steps, 5)) + 1
    assert all(c["system_metrics"] == {} for c in checkpoints)


def test_the_sampler_thread_is_stopped_by_finish() -> None:
    """Contract: the sampler is a thread of the run, started at init and stopped (joined) by
    `finish()`; none is left behind, across several runs."""
    for _ in range(2):
        tracer.init(project="p", system_metrics_interval=0.1, capture_samples=0)
        assert len(sampler_threads()) == 1
        train_for(0.2)
        tracer.finish()
        assert sampler_threads() == []


def test_a_fast_sampler_never_costs_training_a_point() -> None:
    """Contract: the sampler never blocks or disturbs the training thread; with a 10 ms
    interval, 2000 log+step calls complete and every loss point is stored (no timing is
    asserted: this machine is noisy)."""
    run = tracer.init(
        project="p", checkpoint_interval=500, system_metrics_interval=0.01, capture_samples=0
    )
    total = 2000
    for i in range(total):
        tracer.log({"loss": float(i)})
        tracer.step()
    tracer.finish()

    loss = series(run.run_id, "loss")
    assert loss["steps"] == list(range(total))
    assert loss["values"] == [float(i) for i in range(total)]
    with open_store() as store:
        stored = store.get_run(run.run_id)
    assert stored is not None
    assert stored["status"] == "finished" and stored["total_steps"] == total
    assert sampler_threads() == []
