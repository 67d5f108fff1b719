"""The `tracer` command, run as a subprocess (`python -m tracer.cli`) on real stored runs: a
clean run, one with anomalies (a loss spike, then NaN), and one whose process was SIGKILLed.

The runs are written once per module by child processes of their own (plain tracer API, no
torch), into one storage directory that every test reads through TRACER_STORAGE_PATH.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STEPS = 200
NAN_STEP = 120
SPIKE_STEP = 60

WRITE_RUN = f"""
    import sys, tracer
    name, kind = sys.argv[1], sys.argv[2]
    tags = ["baseline"] if kind == "clean" else []
    run = tracer.init(
        project="cli", run_name=name, tags=tags, config={{"lr": 0.1, "kind": kind}},
        track_system_metrics=False,
    )
    for step in range({STEPS}):
        loss = 2.0 / (1 + step) + 0.01 * ((step * 7919) % 11 - 5) / 5
        if kind == "anomalous" and step == {SPIKE_STEP}:
            loss = 50.0
        if kind == "anomalous" and step >= {NAN_STEP}:
            loss = float("nan")
        tracer.log({{"loss": loss, "accuracy": min(1.0, step / 150)}})
        tracer.step()
        if kind == "crashed" and step == 80:
            tracer.get_run().flush()
            print("flushed", flush=True)
            sys.stdin.readline()  # the test kills this process here
    tracer.finish()
"""


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three runs: clean, anomalous and crashed (SIGKILL after its step-80 flush)."""
    root = tmp_path_factory.mktemp("cli")
    script = root / "write_run.py"
    script.write_text(textwrap.dedent(WRITE_RUN))
    env = child_env(root / ".tracer")
    for name, kind in (("clean-run", "clean"), ("spiky-run", "anomalous")):
        subprocess.run([sys.executable, str(script), name, kind], env=env, check=True, cwd=root)
    child = subprocess.Popen(
        [sys.executable, str(script), "crashed-run", "crashed"],
        env=env,
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "flushed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    yield root / ".tracer"


def child_env(storage: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    env["TRACER_STORAGE_PATH"] = str(storage)
    env["COLUMNS"] = "200"
    return env


def tracer_cli(storage: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tracer.cli", *args],
        env=child_env(storage),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
    return done


def as_json(storage: Path, *args: str) -> Any:
    return json.loads(tracer_cli(storage, *args, "--json").stdout)


def run_id(storage: Path, name: str) -> str:
    return str(as_json(storage, "show", name)["run_id"])


def test_runs_lists_every_run_with_its_status(storage: Path) -> None:
    listing = tracer_cli(storage, "runs").stdout
    for name in ("clean-run", "spiky-run", "crashed-run"):
        assert name in listing
    assert "crashed" in listing and "finished" in listing
    runs = {r["run_name"]: r for r in as_json(storage, "runs")}
    assert {n: r["status"] for n, r in runs.items()} == {
        "clean-run": "finished",
        "spiky-run": "finished",
        "crashed-run": "crashed",
    }
    assert runs["spiky-run"]["anomalies"] >= 2 and runs["clean-run"]["anomalies"] == 0
    assert [r["run_name"] for r in as_json(storage, "runs", "--status", "crashed")] == [
        "crashed-run"
    ]
    assert [r["run_name"] for r in as_json(storage, "runs", "--tag", "baseline")] == ["clean-run"]
    assert as_json(storage, "runs", "--project", "nobody") == []


def test_show_gives_final_and_best_metrics(storage: Path) -> None:
    text = tracer_cli(storage, "show", "clean-run").stdout
    assert "finished" in text and "loss" in text and "accuracy" in text and "No anomalies" in text
    summary = as_json(storage, "show", "clean-run")
    assert summary["total_steps"] == STEPS
    assert summary["best_metrics"]["accuracy"] == 1.0
    assert summary["final_metrics"]["loss"] == pytest.approx(2.0 / STEPS, abs=0.02)
    assert summary["config"] == {"lr": 0.1, "kind": "clean"}


def test_show_a_crashed_run_says_so_and_keeps_what_it_logged(storage: Path) -> None:
    text = tracer_cli(storage, "show", "crashed-run").stdout
    assert "crashed" in text and "stopped without ending the run" in text
    summary = as_json(storage, "show", "crashed-run")
    assert summary["status"] == "crashed"
    assert summary["total_steps"] >= 80  # everything up to the flush at step 80 survived


def test_show_anomalous_run_lists_anomalies_with_nan_as_text(storage: Path) -> None:
    text = tracer_cli(storage, "show", "spiky-run").stdout
    assert "nan_or_inf" in text and f"{NAN_STEP}" in text
    summary = as_json(storage, "show", "spiky-run")
    assert summary["final_metrics"]["loss"] == "nan"  # JSON has no NaN: spelled as a string
    steps = {(a["anomaly_type"], a["step"]) for a in summary["anomaly_list"]}
    assert ("nan_or_inf", NAN_STEP) in steps and ("loss_spike", SPIKE_STEP) in steps


def test_unknown_run_exits_3_with_near_matches(storage: Path) -> None:
    done = tracer_cli(storage, "show", "clean-rnu", expect=3)
    assert "clean-run" in done.stderr  # the near match is named
    assert "Traceback" not in done.stderr


def test_missing_storage_exits_1(tmp_path: Path) -> None:
    done = tracer_cli(tmp_path / "nothing-here", "runs", expect=1)
    assert "no Tracer data" in done.stderr


def test_compare_names_where_runs_diverge(storage: Path) -> None:
    text = tracer_cli(storage, "compare", "clean-run", "spiky-run").stdout
    assert "loss" in text and "accuracy" in text
    result = as_json(storage, "compare", "clean-run", "spiky-run", "--metric", "loss")
    assert list(result["metrics"]) == ["loss"]
    assert result["metrics"]["loss"]["first_divergence_step"] == SPIKE_STEP
    accuracy = as_json(storage, "compare", "clean-run", "spiky-run", "--metric", "accuracy")
    assert accuracy["metrics"]["accuracy"]["first_divergence_step"] is None


def test_anomalies_stored_detected_filtered_and_failing(storage: Path) -> None:
    stored = as_json(storage, "anomalies", "spiky-run")
    detected = as_json(storage, "anomalies", "spiky-run", "--detect")
    key = [(a["step"], a["anomaly_type"], a["subject"]) for a in stored]
    assert key == [(a["step"], a["anomaly_type"], a["subject"]) for a in detected]
    only_nan = as_json(storage, "anomalies", "spiky-run", "--type", "nan_or_inf")
    assert {a["anomaly_type"] for a in only_nan} == {"nan_or_inf"}
    assert only_nan[0]["step"] == NAN_STEP
    tracer_cli(storage, "anomalies", "spiky-run", "--fail-on", "critical", expect=4)
    tracer_cli(storage, "anomalies", "clean-run", "--fail-on", "info")
    stored_again = tracer_cli(storage, "anomalies", "spiky-run", "--detect", "--store")
    assert "stored 0 new" in stored_again.stderr  # all were found while it trained
    tracer_cli(storage, "anomalies", "spiky-run", "--store", expect=2)


def test_export_csv_and_json_round_trip(storage: Path, tmp_path: Path) -> None:
    rows = list(csv.reader(io.StringIO(tracer_cli(storage, "export", "spiky-run").stdout)))
    assert rows[0] == ["step", "accuracy", "loss"]
    assert len(rows) == STEPS + 1
    by_step = {int(r[0]): r for r in rows[1:]}
    assert by_step[NAN_STEP][2] == "nan" and float(by_step[SPIKE_STEP][2]) == 50.0
    out = tmp_path / "run.json"
    tracer_cli(storage, "export", "spiky-run", "--format", "json", "-o", str(out))
    document = json.loads(out.read_text(), parse_constant=pytest.fail)  # strict JSON
    loss = document["metrics"]["loss"]
    assert loss["steps"] == list(range(STEPS)) and loss["values"][NAN_STEP] == "nan"
    assert document["run"]["run_name"] == "spiky-run"
    assert {a["anomaly_type"] for a in document["anomalies"]} >= {"nan_or_inf", "loss_spike"}


def test_plot_in_the_terminal_and_to_svg(storage: Path, tmp_path: Path) -> None:
    text = tracer_cli(storage, "plot", "spiky-run", "loss", "accuracy", "--width", "100").stdout
    assert any(0x2800 < ord(c) <= 0x28FF for c in text)  # Braille dots were drawn
    assert "non-finite" in text and "anomalies at steps" in text
    tracer_cli(storage, "plot", "spiky-run", "no-such-metric", expect=2)
    pytest.importorskip("tracer.report.svg")
    image = tmp_path / "loss.svg"
    tracer_cli(storage, "plot", "spiky-run", "loss", "-o", str(image))
    root = ElementTree.parse(image).getroot()
    assert root.tag.endswith("svg")
    drawn = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("path", "polyline")]
    assert drawn


def test_plot_png_needs_the_plot_extra(storage: Path, tmp_path: Path) -> None:
    import importlib.util

    image = tmp_path / "loss.png"
    if importlib.util.find_spec("matplotlib") is None:
        done = tracer_cli(storage, "plot", "clean-run", "loss", "-o", str(image), expect=5)
        assert "tracer-core[plot]" in done.stderr
    else:
        tracer_cli(storage, "plot", "clean-run", "loss", "-o", str(image))
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_writes_one_html_file(storage: Path, tmp_path: Path) -> None:
    pytest.importorskip("tracer.report")
    out = tmp_path / "report.html"
    tracer_cli(storage, "report", "spiky-run", "clean-run", "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert "spiky-run" in html and "clean-run" in html and "class MetricChart" in html
    tracer_cli(storage, "report", "a", "b", "c", expect=2)


def test_gc_dry_run_lists_and_gc_deletes_only_old_ended_runs(tmp_path: Path) -> None:
    store = tmp_path / ".tracer"
    script = tmp_path / "age.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, tracer
            from tracer.analysis import QueryEngine
            for name in ("old-run", "new-run"):
                tracer.init(project="gc", run_name=name)
                tracer.log({"loss": 1.0})
                tracer.finish()
            with QueryEngine() as query:
                old = query.resolve_run("old-run")["run_id"]
                query.storage.update_run(old, end_time=time.time() - 40 * 86400)
            """
        )
    )
    subprocess.run([sys.executable, str(script)], env=child_env(store), check=True)
    dry = tracer_cli(store, "gc", "--dry-run").stdout
    assert "would delete 1 run" in dry and "old-run" in dry and "new-run" not in dry
    assert len(as_json(store, "runs")) == 2
    done = tracer_cli(store, "gc").stdout
    assert "deleted 1 run" in done
    assert [r["run_name"] for r in as_json(store, "runs")] == ["new-run"]
    assert "Nothing to delete" in tracer_cli(store, "gc", "--days", "1").stdout


@pytest.mark.parametrize("module", ["tracer.cli", "tracer"])
def test_version_and_help(module: str) -> None:
    """`python -m tracer` is the command too (no script on PATH needed)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "tracer" in done.stdout
    started = time.monotonic()
    helped = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    for command in ("runs", "show", "compare", "anomalies", "export", "gc", "plot", "report"):
        assert command in helped.stdout
    assert time.monotonic() - started < 30
