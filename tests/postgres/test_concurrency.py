"""Many processes, one database: 16 real writer processes at once lose no row; a run on
another host reads "crashed" by its heartbeat (its pid means nothing here); deleting a big
run goes in batches of short transactions, never waiting on other runs' writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tracer_postgres.removal
from tests.postgres.helpers import schema_url, server_url
from tracer.storage import open_storage
from tracer_postgres import PostgresStorage
from tracer_postgres.chunks import COLUMNS

pytestmark = pytest.mark.slow

WRITERS = 16
STEPS = 2000
METRICS = ("loss", "acc", "lr")

WRITER = """
    import sys, tracer
    url, index, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tracer.init(
        project="many", run_name=f"job-{index}", storage_path=url, flush_interval=0.05,
        track_system_metrics=False,
    )
    for step in range(steps):
        tracer.log({"loss": 1.0 / (1 + step), "acc": step / steps, "lr": float(index)})
        tracer.step()
    tracer.finish()
"""

ON_ANOTHER_HOST = """
    import socket
    socket.gethostname = lambda: "another-host"  # before tracer reads it
    import sys, tracer
    run = tracer.init(
        project="hosts", storage_path=sys.argv[1], heartbeat_interval=1.0,
        track_system_metrics=False,
    )
    tracer.log({"loss": 1.0})
    tracer.step()
    run.flush()
    print(run.run_id, flush=True)
    sys.stdin.readline()  # the test kills this process here
"""


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _schema(url: str) -> str:
    return url.rsplit("=", 1)[1]


def test_sixteen_processes_write_one_database_and_lose_no_row(tmp_path: Path) -> None:
    url = schema_url("sixteen")  # empty: the processes also race to create the schema
    script = _script(tmp_path, "writer.py", WRITER)
    children = [
        subprocess.Popen(
            [sys.executable, script, url, str(index), str(STEPS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(WRITERS)
    ]
    for child in children:
        _, errors = child.communicate(timeout=300)
        assert child.returncode == 0, errors
        assert "could not write" not in errors, errors
    reader = open_storage(url)
    try:
        runs = reader.list_runs("many")
        assert sorted(r["run_name"] for r in runs) == sorted(f"job-{i}" for i in range(WRITERS))
        for run in runs:
            assert run["status"] == "finished" and run["total_steps"] == STEPS
            counts = {m["name"]: m["count"] for m in reader.list_metrics(run["run_id"])}
            assert all(counts[name] == STEPS for name in METRICS), counts
            steps, _ = reader.get_metric_arrays(run["run_id"], "loss")
            assert list(steps) == list(range(STEPS))
    finally:
        reader.close()
    with psycopg.connect(server_url()) as connection:
        stored = connection.execute(
            f"SELECT sum(p.count)::bigint FROM {_schema(url)}.metric_chunks p"
            f" JOIN {_schema(url)}.series s ON s.id = p.series_id"
            " WHERE s.name = ANY(%s)",
            (list(METRICS),),
        ).fetchone()
    assert stored == (WRITERS * STEPS * len(METRICS),)


def test_a_run_on_another_host_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    url = schema_url("hosts")
    script = _script(tmp_path, "elsewhere.py", ON_ANOTHER_HOST)
    child = subprocess.Popen(
        [sys.executable, script, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    reader = PostgresStorage(url)
    try:
        run = reader.get_run(run_id)
        # its pid is dead on this host, but the run is on "another-host": still running
        assert run is not None and run["host"] == "another-host"
        assert run["status"] == "running"
        with psycopg.connect(server_url()) as connection:  # an hour without a heartbeat
            connection.execute(
                f"UPDATE {_schema(url)}.runs SET heartbeat = heartbeat - 3600 WHERE id = %s",
                (run_id,),
            )
        run = reader.get_run(run_id)
        assert run is not None and run["status"] == "crashed"
    finally:
        reader.close()


class _CountingTransactions(PostgresStorage):
    """The real backend, counting the transactions it opens."""

    transactions = 0

    def _transaction(self) -> Any:
        self.transactions += 1
        return super()._transaction()


def test_deleting_a_run_goes_in_batches_beside_a_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracer_postgres.removal, "DELETE_BATCH", 4)  # chunks of 256 points
    url = schema_url("delete")
    storage = _CountingTransactions(url)
    try:
        for run_id in ("old", "live"):
            storage.create_run(run_id, "p", run_id, 1.0, {})
        steps = list(range(5500))
        storage.write_metrics("old", {"loss": (steps, [1.0] * 5500), "acc": ([0], [1.0])})
        storage.write_metrics("live", {"loss": ([0], [1.0])})
        schema = _schema(url)
        writer = psycopg.connect(server_url())  # a writer of "live", mid-transaction
        try:
            writer.execute(
                f"INSERT INTO {schema}.metric_chunks ({COLUMNS}) SELECT id, 1, 1, 1, '',"
                " float8send(2.0), 2.0, 2.0, 2.0, 2.0, 0, 1, 2.0, 0, 1, 0"
                f" FROM {schema}.series WHERE run_id = 'live'"
            )
            before = storage.transactions
            deleting = threading.Thread(target=storage.delete_run, args=("old",))
            deleting.start()
            deleting.join(timeout=120)
            assert not deleting.is_alive()  # it never waited for the open transaction
            assert storage.transactions - before >= 6  # 22 chunks, 4 per transaction
            writer.commit()
        finally:
            writer.close()
        assert storage.get_run("old") is None
        assert storage.get_metric_timeseries("old", "loss") == {"steps": [], "values": []}
        assert storage.get_metric_timeseries("live", "loss")["steps"] == [0, 1]
        with psycopg.connect(server_url()) as connection:
            left = connection.execute(
                f"SELECT sum(count)::bigint FROM {schema}.metric_chunks"
            ).fetchone()
        assert left == (2,)
    finally:
        storage.close()
