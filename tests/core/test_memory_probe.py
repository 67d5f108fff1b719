"""The step-cadence memory probe: a leak of tensors grows the C heap in use, which the leak
detector judges; a healthy loop whose large tensors fragment glibc's heap grows resident
memory for a while but not the heap in use, and is no leak."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracer
from tracer.analysis import QueryEngine
from tracer.capture.malloc_stats import heap_in_use_reader

pytest.importorskip("torch")  # core-notorch runs tests/core without it

import torch
from torch import nn

pytestmark = pytest.mark.skipif(heap_in_use_reader() is None, reason="needs glibc mallinfo2")
HEAP = "system/step/heap_in_use_mb"


def train_full_batch(tmp_path: Path, hoard_mb: float = 0.0) -> tuple[list[str], list[float]]:
    """A regression trained on its whole dataset at each step (1 MB activations freed and
    reallocated each step); `hoard_mb` keeps that many MB of tensors alive per step."""
    torch.manual_seed(0)
    inputs = torch.randn(4096, 16)
    targets = torch.tanh(inputs @ torch.randn(16, 1))
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    hoard = []
    run = tracer.init(project="memory", storage_path=str(tmp_path))
    tracer.watch(model, optimizer=optimizer)
    for _ in range(200):
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if hoard_mb:
            hoard.append(torch.ones(int(hoard_mb * 262144)))
        tracer.log({"loss": loss.detach()})
        tracer.step()
    tracer.finish()
    with QueryEngine(storage_path=str(tmp_path)) as query:
        found = [a["anomaly_type"] for a in query.get_anomalies(run.run_id)]
        heap = query.get_metric_history(run.run_id, HEAP)["values"]
    return found, heap


def test_a_full_batch_loop_is_no_leak(tmp_path: Path) -> None:
    found, heap = train_full_batch(tmp_path)
    assert "memory_leak" not in found
    assert len(heap) == 20 and max(heap) - min(heap) < 8  # MB: flat


def test_tensors_kept_at_each_step_are_a_leak_of_the_heap(tmp_path: Path) -> None:
    found, heap = train_full_batch(tmp_path, hoard_mb=1.0)
    assert "memory_leak" in found
    assert heap[-1] - heap[0] > 150  # MB: 1 MB a step, 190 steps between the readings
