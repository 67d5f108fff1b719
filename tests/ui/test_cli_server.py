"""`tracer ui` as a user runs it: a real process serving a real uvicorn, 127.0.0.1 unless
asked, with a warning when asked for another address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

pytest.importorskip("starlette")  # the extra tracer-core[ui]; skipped without it
pytest.importorskip("uvicorn")

from tests.ui.stores import write_store

START_S = 60.0


@contextmanager
def tracer_ui(store: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python -m tracer ui --storage STORE --port 0 OPTIONS`; yields (its URL, the process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "ui", "--storage", str(store), "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Tracer dashboard on http://" in line, (line, proc.stderr and proc.stderr.read())
        yield line.split(" on ", 1)[1].split()[0], proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get_json(url: str) -> dict[str, object]:
    deadline = time.monotonic() + START_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=START_S) as response:
                data: dict[str, object] = json.loads(response.read())
                return data
        except ConnectionRefusedError:  # printed before uvicorn listens
            assert time.monotonic() < deadline
            time.sleep(0.05)
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError):
                raise
            assert time.monotonic() < deadline
            time.sleep(0.05)


def listening_addresses(pid: int) -> set[str]:
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", process.connections)(kind="tcp")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
def test_tracer_ui_serves_the_api_on_loopback_by_default(tmp_path: Path) -> None:
    write_store(tmp_path / "store")
    with tracer_ui(tmp_path / "store") as (url, proc):
        assert url.startswith("http://127.0.0.1:")
        runs = get_json(url + "api/runs")
        assert {r["name"] for r in runs["runs"]} == {"spiky", "calm", "other"}  # type: ignore[attr-defined, index]
        assert listening_addresses(proc.pid) == {"127.0.0.1"}
    assert proc.returncode == 0
    assert proc.stderr is not None and "anyone" not in proc.stderr.read()


@pytest.mark.slow
def test_tracer_ui_on_all_addresses_warns_and_takes_a_token(tmp_path: Path) -> None:
    write_store(tmp_path / "store")
    with tracer_ui(tmp_path / "store", "--host", "0.0.0.0", "--token", "t0k") as (url, proc):
        assert url.endswith("/?token=t0k")
        assert listening_addresses(proc.pid) == {"0.0.0.0"}
        base = url.split("?", 1)[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(base + "api/runs")
        assert refused.value.code == 401
        assert len(get_json(base + "api/runs?token=t0k")["runs"]) == 3  # type: ignore[arg-type]
    assert proc.stderr is not None
    assert "anyone who can reach this machine" in proc.stderr.read()
