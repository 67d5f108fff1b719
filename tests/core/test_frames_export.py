"""`tracer export RUN... --format parquet|arrow|csv|json`, run as a subprocess on a real
store: every value, NaN and +-Inf included, comes back exactly from each format; Parquet and
Arrow carry the runs' config and anomalies in their metadata; several runs in one file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracer.config import TracerConfig
from tracer.storage import open_storage

NAN, INF = math.nan, math.inf
SPECIAL = [NAN, INF, -INF, -0.0, 0.0, 5e-324, 1.7976931348623157e308, -2.5, 1 / 3]


def bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", float(v)) for v in values]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """Two runs: "alpha" holding every special value and an anomaly, "beta" a second run."""
    location = tmp_path / "store"
    store = open_storage(TracerConfig(project_name="p", storage_path=str(location)))
    now = time.time()
    store.create_run("a1", "exp", "alpha", now, {"lr": 0.1, "model": {"layers": 2}})
    steps = list(range(len(SPECIAL)))
    store.write_metrics(
        "a1",
        {
            "loss": (steps, SPECIAL),
            "acc": ([0, 4], [0.25, 0.75]),
            "_timestamp": (steps, [500.0 + s for s in steps]),
        },
    )
    store.write_anomalies(
        [
            {
                "run_id": "a1", "step": 0, "anomaly_type": "nan_or_inf", "severity": "critical",
                "subject": "loss", "value": NAN, "baseline": 1.0, "threshold": INF,
                "message": "NaN loss", "detector": "nonfinite", "end_step": 2, "count": 3,
                "open": False, "hint": "lower the lr",
            }
        ]
    )  # fmt: skip
    store.create_run("b1", "exp", "beta", now + 1, {"lr": 0.2})
    store.write_metrics("b1", {"loss": ([0, 1], [-INF, 3.0])})
    store.close()
    return location


def export(storage: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    done = subprocess.run(
        [sys.executable, "-m", "tracer.cli", "export", *args, "--storage", str(storage)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == expect, (args, done.stdout, done.stderr)
    return done


def check_long(table: object) -> None:
    rows = table.to_pylist()  # type: ignore[attr-defined]
    loss = [r for r in rows if (r["run_id"], r["metric"]) == ("a1", "loss")]
    assert bits([r["value"] for r in loss]) == bits(SPECIAL)
    assert [r["time"] for r in loss] == [500.0 + s for s in range(len(SPECIAL))]
    beta = [r["value"] for r in rows if r["run_id"] == "b1"]
    assert bits(beta) == bits([-INF, 3.0])


def check_metadata(metadata: dict[bytes, bytes]) -> None:
    assert metadata[b"tracer.format"] == b"tracer-long-1"
    runs = json.loads(metadata[b"tracer.runs"])
    assert [r["run_name"] for r in runs] == ["alpha", "beta"]
    assert runs[0]["config"] == {"lr": 0.1, "model": {"layers": 2}}
    anomalies = json.loads(metadata[b"tracer.anomalies"])
    assert [(a["run_id"], a["anomaly_type"]) for a in anomalies] == [("a1", "nan_or_inf")]
    assert (anomalies[0]["value"], anomalies[0]["threshold"]) == ("nan", "inf")


def test_parquet_round_trip(storage: Path, tmp_path: Path) -> None:
    parquet = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "runs.parquet"
    done = export(storage, "alpha", "b1", "--format", "parquet", "-o", str(out))
    assert f"wrote {len(SPECIAL) + 2 + 2} point(s) of 2 run(s)" in done.stderr
    table = parquet.read_table(out)
    check_long(table)
    check_metadata(table.schema.metadata)


def test_arrow_round_trip_and_metric_filter(storage: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    out = tmp_path / "runs.arrow"
    export(storage, "alpha", "beta", "--format", "arrow", "-o", str(out))
    with pa.memory_map(str(out)) as source:
        table = pa.ipc.open_file(source).read_all()
    check_long(table)
    check_metadata(table.schema.metadata)
    export(storage, "alpha", "--format", "arrow", "--metric", "acc", "-o", str(out))
    with pa.memory_map(str(out)) as source:
        only = pa.ipc.open_file(source).read_all()
    assert set(only.column("metric").to_pylist()) == {"acc"}


def test_binary_formats_need_a_file(storage: Path) -> None:
    done = export(storage, "alpha", "--format", "parquet", expect=2)
    assert "-o FILE" in done.stderr


def test_csv_and_json_keep_every_value(storage: Path, tmp_path: Path) -> None:
    """One run: the documented layouts as before (wide CSV with repr strings, JSON with
    "nan"/"inf" strings); several runs: a run_id column, a list of documents."""
    rows = list(csv.reader(io.StringIO(export(storage, "alpha").stdout)))
    assert rows[0] == ["step", "acc", "loss"]
    assert bits([float(r[2]) for r in rows[1:]]) == bits(SPECIAL)
    assert rows[1][1] == "0.25" and rows[2][1] == ""
    several = list(csv.reader(io.StringIO(export(storage, "alpha", "beta").stdout)))
    assert several[0] == ["run_id", "step", "acc", "loss"]
    assert [r[0] for r in several[1:]].count("b1") == 2
    assert several[-2][3] == "-inf"
    document = json.loads(export(storage, "alpha", "--format", "json").stdout)
    values = [float(v) for v in document["metrics"]["loss"]["values"]]
    assert bits(values) == bits(SPECIAL)
    assert document["run"]["config"]["lr"] == 0.1 and len(document["anomalies"]) == 1
    out = tmp_path / "both.json"
    export(storage, "alpha", "beta", "--format", "json", "-o", str(out))
    both = json.loads(out.read_text())
    assert [d["run"]["run_name"] for d in both["runs"]] == ["alpha", "beta"]
