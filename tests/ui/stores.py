"""Real stores for the dashboard's tests, written by real `tracer.init/log/step/finish` runs,
and a real uvicorn server around an app (in a thread)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

import tracer
from tracer.storage.sqlite import SQLiteStorage
from tracer.ui.server import bind

STEPS = 3000
SPIKE_STEP, NAN_STEP, INF_STEP = 1234, 2000, 2500


def loss_at(step: int) -> float:
    """A noisy, slowly falling loss, with a spike, a NaN and an Inf at known steps."""
    if step == SPIKE_STEP:
        return 100.0
    if step == NAN_STEP:
        return math.nan
    if step == INF_STEP:
        return math.inf
    return 2.0 / (1 + step / 500) + 0.01 * ((step * 7919) % 13)


def write_store(location: Path) -> dict[str, str]:
    """Three runs in two projects; returns their ids by name. "spiky" has the spike, the
    NaN and the Inf (and so anomalies), tags, a nested config and two model saves; "calm"
    is its twin without faults and another lr; "other" lives in project "nlp"."""
    ids = {}
    plans: list[tuple[str, str, dict[str, Any], bool]] = [
        ("vision", "spiky", {"lr": 0.1, "model": {"depth": 4}, "seed": 1}, True),
        ("vision", "calm", {"lr": 0.2, "model": {"depth": 4}, "seed": 1}, False),
        ("nlp", "other", {"lr": 0.1, "eps": math.nan}, False),
    ]
    for project, name, config, faulty in plans:
        run = tracer.init(
            project,
            run_name=name,
            storage_path=str(location),
            config=config,
            tags=["baseline", name],
            checkpoint_interval=500,
            track_system_metrics=False,
        )
        for step in range(STEPS):
            loss = loss_at(step) if faulty else 2.0 / (1 + step / 500) + 0.01 * (step % 13)
            tracer.log({"loss": loss, "acc": step / STEPS})
            if step in (400, 1800):
                run.record_model_save(f"ckpt-{step}.pt")
            tracer.step()
        tracer.finish()
        ids[name] = run.run_id
    return ids


class MetricReadCounter(SQLiteStorage):
    """The real SQLite backend (read-only), counting calls that read a run's data."""

    COUNTED = (
        "get_metric_timeseries", "get_metric_arrays", "get_metric_window", "list_metrics",
        "get_checkpoints", "get_events", "get_samples", "get_anomalies",
    )  # fmt: skip

    def __init__(self, location: str) -> None:
        super().__init__(location, read_only=True)
        self.calls: dict[str, int] = {}

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in MetricReadCounter.COUNTED:
            calls = super().__getattribute__("calls")
            calls[name] = calls.get(name, 0) + 1
        return attribute


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` under a real uvicorn server on a free 127.0.0.1 port; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
