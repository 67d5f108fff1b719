"""The background writer: batching, heartbeats, and storage failures that never reach training."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import tracer
from tests.core.helpers import open_store, series
from tracer.storage.base import StorageBackend


class FlakyStorage:
    """Wraps a backend's write_batch to fail the first `failures` calls, like a full disk."""

    def __init__(self, storage: StorageBackend, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self._write_batch = storage.write_batch

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk full")
        self._write_batch(*args, **kwargs)


def test_storage_failures_are_retried_reported_once_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = tracer.init(project="p", flush_interval=0.05, write_buffer_size=5)
    flaky = FlakyStorage(run.storage, failures=4)
    monkeypatch.setattr(run.storage, "write_batch", flaky)
    with caplog.at_level(logging.WARNING):
        for step in range(50):
            tracer.log({"loss": float(step)})  # never raises, never blocks on the failure
            tracer.step()
            time.sleep(0.002)
        tracer.finish()
    assert flaky.calls > 4
    assert caplog.text.count("could not write to storage") == 1
    assert "disk full" in caplog.text
    assert series(run.run_id, "loss")["steps"] == list(range(50))


def test_a_storage_that_stays_broken_is_summarized_at_finish(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = tracer.init(project="p", flush_interval=0.05)
    monkeypatch.setattr(run.storage, "write_batch", FlakyStorage(run.storage, failures=10**9))
    with caplog.at_level(logging.WARNING):
        for step in range(20):
            tracer.log({"loss": float(step)})
            tracer.step()
        started = time.perf_counter()
        tracer.finish()
    assert time.perf_counter() - started < 10  # finish never hangs on a broken storage
    assert "ended with storage problems" in caplog.text
    assert "never written (lost)" in caplog.text


def test_unreadable_values_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding:
        """Passes the training-thread check (a real number type) but fails to convert."""

    run = tracer.init(project="p")
    run._pending["bad"] = Exploding()  # bypass log() validation, as a broken tensor would
    tracer.log({"loss": 1.0})
    with caplog.at_level(logging.WARNING):
        tracer.finish()
    assert "could not read metric 'bad'" in caplog.text
    assert series(run.run_id, "loss")["values"] == [1.0]


def test_the_heartbeat_and_progress_are_written_while_the_run_is_idle() -> None:
    run = tracer.init(project="p", heartbeat_interval=0.1, flush_interval=0.05)
    for _ in range(7):
        tracer.step()
    with open_store() as store:
        first = store.get_run(run.run_id)
    time.sleep(0.6)
    with open_store() as store:
        later = store.get_run(run.run_id)
    assert first is not None and later is not None
    assert later["heartbeat"] > first["heartbeat"]
    assert later["total_steps"] == 7 and later["status"] == "running"


def test_a_full_buffer_wakes_the_writer_before_the_flush_interval() -> None:
    run = tracer.init(project="p", flush_interval=30, write_buffer_size=10)
    for step in range(25):
        tracer.log({"loss": float(step)})
        tracer.step()
    deadline = time.time() + 10
    while time.time() < deadline and len(series(run.run_id, "loss")["steps"]) < 20:
        time.sleep(0.02)
    assert len(series(run.run_id, "loss")["steps"]) >= 20


def test_written_step_dicts_are_reused_without_mixing_steps() -> None:
    """The writer hands written step dicts back, emptied, for later steps (a flat-out loop
    then allocates no container per step); reusing one never leaks a value across steps."""
    run = tracer.init(project="p", flush_interval=30)
    first = run._pending  # the dict step 0's metrics go into
    tracer.log({"loss": 0.0, "acc": 0.5})
    tracer.step()
    run.flush()  # step 0 is written: its dict is free again
    reused = False
    for step in range(1, 6):
        reused = reused or run._pending is first
        tracer.log({"loss": float(step)} if step % 2 else {"acc": step / 10})
        tracer.step()
        run.flush()
    tracer.finish()
    assert reused
    assert series(run.run_id, "loss") == {"steps": [0, 1, 3, 5], "values": [0.0, 1.0, 3.0, 5.0]}
    assert series(run.run_id, "acc") == {"steps": [0, 2, 4], "values": [0.5, 0.2, 0.4]}


def test_mixed_metric_sets_and_tensors_pivot_correctly() -> None:
    torch = pytest.importorskip("torch")
    run = tracer.init(project="p", checkpoint_interval=4)
    for step in range(10):
        metrics: dict[str, Any] = {"loss": torch.tensor(float(step))}
        if step % 3 == 0:
            metrics["eval"] = step * 10
        tracer.log(metrics)
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "loss") == {
        "steps": list(range(10)),
        "values": [float(s) for s in range(10)],
    }
    assert series(run.run_id, "eval") == {"steps": [0, 3, 6, 9], "values": [0.0, 30.0, 60.0, 90.0]}
    with open_store() as store:
        checkpoints = store.get_checkpoints(run.run_id)
    assert [c["metrics"] for c in checkpoints][:2] == [
        {"loss": 4.0, "eval": 30.0},
        {"loss": 8.0, "eval": 60.0},
    ]


def test_pivoting_many_slices_shares_steps_without_mixing_series() -> None:
    """Metrics logged at every step share one steps list per slice; extending one series
    with a later slice (after a checkpoint split the queue) must copy, never change the list
    the other series still hold."""
    from tracer.core.columns import Columns, order_by_step, pivot

    points = Columns()
    latest: dict[str, float] = {}
    for start in range(0, 40, 10):  # four slices, as checkpoints cut a batch
        steps = list(range(start, start + 10))
        dicts: list[dict[str, Any]] = [
            {"loss": float(s), **({"eval": -float(s)} if s % 3 == 0 else {})} for s in steps
        ]
        pivot(steps, [float(s) for s in steps], dicts, points, latest)
    order_by_step(points)
    assert points["loss"] == (list(range(40)), [float(s) for s in range(40)])
    assert points["_timestamp"] == (list(range(40)), [float(s) for s in range(40)])
    eval_steps = [s for s in range(40) if s % 3 == 0]
    assert points["eval"] == (eval_steps, [-float(s) for s in eval_steps])
    assert latest == {"loss": 39.0, "eval": -39.0}
