"""Live updates through a real uvicorn server: a run trained by a real child process shows
its new anomaly and its status change on the event stream within 2 s of being committed;
a stream ends when its page goes; and a whole session of requests never writes the store."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")  # the extra tracer-core[ui]; skipped without it
pytest.importorskip("uvicorn")

from tests.core.processes import (
    database,
    kill_leftover_children,  # noqa: F401 - an autouse fixture
    start_child,
    storage_dir,
)
from tests.ui.stores import serving, write_store
from tracer.ui.app import create_app

DELIVERY_S = 2.0  # the contract: a commit reaches the page within 2 s
WAIT_S = 60.0  # how long the child may take to get somewhere (a loaded machine)

CHILD = """
import os, sys, time
import tracer

store, flags = sys.argv[1], sys.argv[2]
tracer.init("live", run_name="child", storage_path=store, flush_interval=0.1,
            track_system_metrics=False)
step = 0

def train_until(flag):
    global step
    while not os.path.exists(os.path.join(flags, flag)):
        tracer.log({"loss": 1.0 + 0.01 * (step % 5)})
        tracer.step()
        step += 1
        time.sleep(0.005)

train_until("nan")
tracer.log({"loss": float("nan")})
tracer.step()
train_until("finish")
tracer.finish()
"""

Event = tuple[float, str, dict[str, Any]]


class EventReader:
    """Reads `GET /api/events` in a thread; each event is queued with its arrival time."""

    def __init__(self, url: str) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.response = urllib.request.urlopen(url + "/api/events", timeout=WAIT_S)
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        name = ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    self.events.put((time.monotonic(), name, data))
        except (OSError, ValueError):
            pass

    def wait_for(self, what: str, match: Callable[[str, dict[str, Any]], bool]) -> float:
        """The arrival time of the first event matching `match`."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                arrived, name, data = self.events.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail(f"no event with {what} within {WAIT_S:.0f} s")
            if match(name, data):
                return arrived


def committed(tmp_path: Path, sql: str) -> bool:
    """Whether `sql` (a count) finds something in the child's store, read-only."""
    path = database(tmp_path)
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return bool(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False


def when_committed(tmp_path: Path, sql: str, child: Any, what: str) -> float:
    deadline = time.monotonic() + WAIT_S
    while not committed(tmp_path, sql):
        if child.proc.poll() is not None:
            pytest.fail(f"child exited before {what}:\n{child.stderr()}")
        assert time.monotonic() < deadline, f"the child never committed {what}"
        time.sleep(0.01)
    return time.monotonic()


def run_named(name: str, status: str | None = None) -> Callable[[str, dict[str, Any]], bool]:
    def match(event: str, data: dict[str, Any]) -> bool:
        return event == "runs" and any(
            r["name"] == name and (status is None or r["status"] == status) for r in data["runs"]
        )

    return match


@pytest.mark.slow
def test_new_anomaly_and_status_change_reach_the_page_within_2_s(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    with serving(create_app(str(storage_dir(tmp_path)), poll_interval=0.5)) as url:
        reader = EventReader(url)  # opened before the store exists: it waits for it
        child = start_child(CHILD, tmp_path, str(flags))
        reader.wait_for("the running child", run_named("child", "running"))

        (flags / "nan").touch()
        at = when_committed(
            tmp_path, "SELECT count(*) FROM anomalies WHERE anomaly_type = 'nan_or_inf'", child,
            "the NaN anomaly",
        )  # fmt: skip
        arrived = reader.wait_for(
            "the NaN anomaly",
            lambda name, data: (
                name == "anomalies"
                and any(a["anomaly_type"] == "nan_or_inf" for a in data["anomalies"])
            ),
        )
        assert arrived - at <= DELIVERY_S, f"the anomaly took {arrived - at:.2f} s"

        (flags / "finish").touch()
        at = when_committed(
            tmp_path, "SELECT count(*) FROM runs WHERE status = 'finished'", child, "the finish"
        )
        arrived = reader.wait_for("the finished child", run_named("child", "finished"))
        assert arrived - at <= DELIVERY_S, f"the status took {arrived - at:.2f} s"
        assert child.wait().returncode == 0


@pytest.mark.slow
def test_a_run_whose_process_dies_turns_crashed_on_the_page(tmp_path: Path) -> None:
    """SIGKILL leaves the stored status "running"; readers see "crashed" once the pid is
    gone (same host), and the event stream says so within 2 s of the process being reaped."""
    flags = tmp_path / "flags"
    flags.mkdir()
    with serving(create_app(str(storage_dir(tmp_path)), poll_interval=0.5)) as url:
        reader = EventReader(url)
        child = start_child(CHILD, tmp_path, str(flags))
        reader.wait_for("the running child", run_named("child", "running"))
        child.proc.kill()
        child.proc.wait(WAIT_S)  # reaped: its pid no longer exists
        gone = time.monotonic()
        arrived = reader.wait_for("the crashed child", run_named("child", "crashed"))
        assert arrived - gone <= DELIVERY_S, f"the crash took {arrived - gone:.2f} s"


@pytest.mark.slow
def test_a_stream_ends_when_its_page_goes(tmp_path: Path) -> None:
    write_store(tmp_path / "store")
    app = create_app(str(tmp_path / "store"), poll_interval=0.05)
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        client.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while b"event: runs" not in received:
            received += client.recv(65536)
        assert app.state.live_streams == 1
        client.close()
        deadline = time.monotonic() + WAIT_S
        while app.state.live_streams:
            assert time.monotonic() < deadline, "the stream outlived its client"
            time.sleep(0.02)


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.mark.slow
def test_a_session_of_requests_never_writes_the_store(tmp_path: Path) -> None:
    ids = write_store(tmp_path / "store")
    db = tmp_path / "store" / "tracer.db"
    before = _fingerprint(db)
    with serving(create_app(str(tmp_path / "store"), poll_interval=0.05)) as url:
        reader = EventReader(url)
        reader.wait_for("the runs", run_named("spiky"))
        for path in (
            "/api/runs",
            "/api/runs?project=nlp",
            f"/api/runs/{ids['spiky']}",
            "/api/runs/spiky/series?metric=loss&points=100&start=10&end=2000",
            "/api/runs/spiky/series?metric=acc&x=time",
            "/api/compare?runs=spiky,calm,other&metric=loss",
            "/",
        ):
            with urllib.request.urlopen(url + path, timeout=WAIT_S) as response:
                assert response.status == 200, path
        time.sleep(0.3)  # a few more polls of the live stream
    assert _fingerprint(db) == before
