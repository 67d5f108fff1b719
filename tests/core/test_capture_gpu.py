"""On a CUDA GPU: the per-step capture path never syncs the host, and NVML readings arrive.

Skipped without CUDA (the CPU suite proves the values; this proves the absence of syncs).
"""

from __future__ import annotations

import pytest

import tracer
from tests.core.cuda_training import cuda_model, cuda_steps
from tests.core.helpers import open_store, series

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_tracked_steps_make_no_host_sync() -> None:
    model = cuda_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cuda_steps(model, optimizer, 3, log=False)  # warm up kernels and the optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cuda_steps(model, optimizer, 3, log=False)  # the loop itself is sync-free
    finally:
        torch.cuda.set_sync_debug_mode(0)

    run = tracer.init(
        project="gpu",
        checkpoint_interval=10,
        flush_interval=60,
        write_buffer_size=10**6,
        system_metrics_interval=60,
    )
    tracer.watch(model, optimizer=optimizer)
    cuda_steps(model, optimizer, 2, log=True)  # first capture allocates the ring buffer
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        # 70 steps: ring drains (every 64), checkpoints with full statistics (every 10)
        # and batch samples, all on the training thread, none waiting on the device.
        cuda_steps(model, optimizer, 70, log=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(72))
    assert len(series(run.run_id, "loss")["values"]) == 72
    with open_store() as store:
        checkpoints = store.get_checkpoints(run.run_id)
    assert checkpoints[0]["gradient_stats"]["0.weight"]["norm"] > 0


def test_nvml_and_allocator_readings_are_recorded() -> None:
    pytest.importorskip("pynvml")
    run = tracer.init(project="gpu", system_metrics_interval=0.1, checkpoint_interval=5)
    model = cuda_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tracer.watch(model, optimizer=optimizer)
    cuda_steps(model, optimizer, 20, log=True)
    tracer.finish()
    with open_store() as store:
        checkpoint = store.get_checkpoints(run.run_id)[-1]
        names = {metric["name"] for metric in store.list_metrics(run.run_id)}
    system = checkpoint["system_metrics"]
    assert system["system/gpu0/memory_total_mb"] > 1000
    assert 0 <= system["system/gpu0/utilization_percent"] <= 100
    assert system["system/torch/allocated_mb"] > 0
    assert "system/gpu0/memory_used_mb" in names


def test_a_cuda_allocator_leak_is_found_within_100cuda_steps() -> None:
    """8 MiB of CUDA tensors kept alive per step from step 40: the memory probe's
    `system/step/cuda_allocated_mb` (read every 10 steps, no sync) shows it, and
    memory_leak reports it within 100 steps, online and with nothing before the leak."""
    model = cuda_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = tracer.init(project="gpu", checkpoint_interval=100, system_metrics_interval=60)
    tracer.watch(model, optimizer=optimizer)
    hoard = []
    for step in range(200):
        cuda_steps(model, optimizer, 1, log=True)
        if step >= 40:
            hoard.append(torch.ones(2 * 2**20, device="cuda"))  # 8 MiB of float32
    tracer.finish()
    hoard.clear()
    with open_store() as store:
        leaks = [
            a
            for a in store.get_anomalies(run.run_id, ["memory_leak"])
            if a["subject"] == "system/step/cuda_allocated_mb"
        ]
        allocated = series(run.run_id, "system/step/cuda_allocated_mb")["values"]
    assert allocated[-1] - allocated[0] > 1000  # about 1.3 GB kept
    assert leaks, "no memory_leak on system/step/cuda_allocated_mb"
    assert 40 <= leaks[0]["step"] <= 140
