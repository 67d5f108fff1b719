"""Stores are closed cleanly: the dashboard closes the store it opened when it shuts down, and
a process that never closes its stores (nor finishes its run) exits without the pool's
"couldn't stop thread" complaint, its run finished and every point written first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.postgres.helpers import schema_url
from tracer.exceptions import StorageError
from tracer.storage import open_storage

FORGETFUL = """
import sys
import tracer
from tracer.analysis import QueryEngine

url = sys.argv[1]
run = tracer.init(project="p", run_id="forgotten", storage_path=url, track_system_metrics=False)
for step in range(2000):
    tracer.log({"loss": 1.0 / (1 + step)})
    tracer.step()
reader = QueryEngine(url)  # a reader never closed either, alive until the interpreter ends
reader.list_runs()
# no finish(), no close(): the interpreter ends
"""


def test_the_dashboard_closes_the_store_it_opened() -> None:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from tracer.ui.app import create_app

    url = schema_url("dashboard-closes")
    open_storage(url).close()  # a store with Tracer's tables, and nothing in it
    app = create_app(url)
    with TestClient(app) as client:
        assert client.get("/api/runs").status_code == 200
        backend = app.state.store.get()
        assert backend is not None
        backend.list_runs()
    with pytest.raises(StorageError, match="closed"):
        backend.list_runs()


def test_a_process_that_closes_nothing_exits_cleanly(tmp_path: Path) -> None:
    url = schema_url("forgetful")
    script = tmp_path / "forgetful.py"
    script.write_text(textwrap.dedent(FORGETFUL))
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "couldn't stop" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    reader = open_storage(url)
    try:
        run = reader.get_run("forgotten")
        assert run is not None and run["status"] == "finished"
        assert list(reader.get_metric_arrays("forgotten", "loss")[0]) == list(range(2000))
    finally:
        reader.close()
