"""Keeping the last healthy checkpoint (`pin_checkpoints`) in plain torch loops: a real small
training saves a checkpoint folder every few steps with `tracer.record_model_save`, rotates
its own saves like a framework (only the newest two kept), and gets a NaN batch. The save
before the NaN must survive under `<storage>/pinned/<run>/`, hard-linked, and be named by
`last_healthy_checkpoint`; a healthy run pins nothing; `halt_on` names the checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from html import escape as html_escape
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tracer.actions.pins import list_pins
from tracer.analysis import QueryEngine

torch = pytest.importorskip("torch")  # core-notorch runs tests/core without it

NAN_STEP = 23
SAVE_EVERY = 5
INLINE = {"async_writes": False}  # detection at each step's close: the halt comes at the NaN


def train(
    checkpoints: Path,
    *,
    steps: int = 40,
    nan_step: Optional[int] = NAN_STEP,
    keep: Optional[int] = 2,
    **settings: Any,
) -> str:
    """A traced regression of a small MLP; returns the run id. A folder checkpoint (weights
    and a note) every SAVE_EVERY steps, the oldest deleted past `keep`, as rotation does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="pins", flush_interval=0.05, **settings)
    tracer.watch(model, optimizer=optimizer)
    saved: list[Path] = []
    try:
        for step in range(steps):
            inputs = torch.randn(16, 8)
            if step == nan_step:
                inputs[0, 0] = math.nan
            loss = torch.nn.functional.mse_loss(model(inputs), inputs.sum(1, keepdim=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tracer.log({"loss": loss})
            if step % SAVE_EVERY == 0:
                folder = checkpoints / f"ckpt-{step}"
                (folder / "nested").mkdir(parents=True)
                torch.save(model.state_dict(), folder / "model.pt")
                (folder / "nested" / "note.txt").write_text(f"step {step}")
                tracer.record_model_save(str(folder))  # at the run's step
                saved.append(folder)
                if keep is not None and len(saved) > keep:
                    shutil.rmtree(saved.pop(0))
            tracer.step()
    finally:
        tracer.finish()
    return run.run_id


def finite_weights(path: Path) -> bool:
    state = torch.load(path, weights_only=True)
    return all(bool(torch.isfinite(tensor).all()) for tensor in state.values())


def test_nan_pins_the_save_before_it_although_rotation_deleted_it(tmp_path: Path) -> None:
    run_id = train(tmp_path / "ckpt", pin_checkpoints=True)
    storage = tmp_path / ".tracer"
    pins = list_pins(str(storage), run_id)
    assert [(p.name, p.partial) for p in pins] == [("ckpt-20", False)]
    pinned = Path(pins[0].path)
    assert pinned == storage / "pinned" / run_id / "ckpt-20"
    assert not (tmp_path / "ckpt" / "ckpt-20").exists()  # rotated away by the loop
    assert finite_weights(pinned / "model.pt")
    assert (pinned / "nested" / "note.txt").read_text() == "step 20"
    assert not (storage / "pinned" / run_id / ".staging").exists()  # released at finish
    with QueryEngine(str(storage)) as query:
        healthy = query.last_healthy_checkpoint(run_id)
        events = query.storage.get_events(run_id, "checkpoint_pinned")
    assert healthy is not None
    assert healthy["step"] == 20 and healthy["path"] == str(tmp_path / "ckpt" / "ckpt-20")
    assert healthy["pinned_path"] == str(pinned)
    assert len(events) == 1
    data = events[0]["data"]
    assert (data["anomaly_type"], data["anomaly_step"], data["method"]) == (
        "nan_or_inf",
        NAN_STEP,
        "hardlink",
    )


def test_a_pin_is_a_hard_link_of_the_saved_files(tmp_path: Path) -> None:
    """Without rotation the original files still stand: the pin is the same inodes."""
    run_id = train(tmp_path / "ckpt", keep=None, pin_checkpoints=True)
    pinned = tmp_path / ".tracer" / "pinned" / run_id / "ckpt-20"
    original = tmp_path / "ckpt" / "ckpt-20"
    for relative in ("model.pt", "nested/note.txt"):
        assert os.path.samefile(pinned / relative, original / relative)


def test_a_healthy_run_pins_nothing_and_leaves_no_folder(tmp_path: Path) -> None:
    run_id = train(tmp_path / "ckpt", nan_step=None, pin_checkpoints=True)
    storage = tmp_path / ".tracer"
    assert list_pins(str(storage)) == []
    assert not (storage / "pinned" / run_id).exists()
    with QueryEngine(str(storage)) as query:
        healthy = query.last_healthy_checkpoint(run_id)
    assert healthy is not None and healthy["step"] == 35 and healthy["pinned_path"] is None


def test_pinning_is_off_by_default(tmp_path: Path) -> None:
    train(tmp_path / "ckpt")
    assert not (tmp_path / ".tracer" / "pinned").exists()


def test_pin_on_is_a_severity_critical_by_default() -> None:
    """`pin_on` is the least severity that pins; an unknown one is refused at init."""
    with pytest.raises(ValueError, match="pin_on"):
        tracer.init(project="pins", pin_on="severe")
    assert tracer.TracerConfig(project_name="p").pin_on == "critical"


def test_halt_names_the_pinned_checkpoint_in_the_error_and_the_run(tmp_path: Path) -> None:
    with pytest.raises(tracer.TrainingHalted) as halted:
        train(tmp_path / "ckpt", pin_checkpoints=True, halt_on=["nan_or_inf"], **INLINE)
    storage = tmp_path / ".tracer"
    [pin] = list_pins(str(storage))
    assert halted.value.checkpoint == pin.path
    assert f"last healthy checkpoint: {pin.path}" in str(halted.value)
    with QueryEngine(str(storage)) as query:
        summary = query.get_run_summary(pin.run_id)
    assert summary["status"] == "failed"
    assert pin.path in (summary["error"] or "")


def test_halt_without_pinning_names_the_save_itself(tmp_path: Path) -> None:
    with pytest.raises(tracer.TrainingHalted) as halted:
        train(tmp_path / "ckpt", keep=None, halt_on=["nan_or_inf"], **INLINE)
    original = str(tmp_path / "ckpt" / "ckpt-20")
    assert halted.value.checkpoint == original
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        [run] = query.list_runs()
    assert original in (run["error"] or "")


def test_a_file_rewritten_in_place_is_not_pinned(tmp_path: Path) -> None:
    """One path saved again and again changes under its link: the save before the NaN no
    longer exists, so nothing is pinned and the failure is recorded."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    run = tracer.init(project="pins", flush_interval=0.05, pin_checkpoints=True)
    path = tmp_path / "model.pt"
    for step in range(30):
        value = math.nan if step == 20 else 1.0 / (step + 1)
        tracer.log({"loss": value})
        if step % 5 == 0:
            if step == 20:
                model.weight.data.fill_(math.nan)
            torch.save(model.state_dict(), path)
            os.utime(path, ns=(0, 10**9 * (step + 1)))  # a coarse clock could hide it
            tracer.record_model_save(str(path), step=step)
        tracer.step()
    tracer.finish()
    assert list_pins(str(tmp_path / ".tracer")) == []
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        failed = query.storage.get_events(run.run_id, "checkpoint_pin_failed")
    assert len(failed) == 1 and "written again" in failed[0]["data"]["reason"]


def tracer_cli(storage: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tracer.cli", *args, "--storage", str(storage)],
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def age(storage: Path, run_id: str, days: float) -> None:
    with QueryEngine(str(storage)) as query:
        query.storage.update_run(run_id, end_time=time.time() - days * 86400)


def test_runs_and_show_list_pins_and_gc_removes_them_never_silently(tmp_path: Path) -> None:
    """Two pinned runs: `runs` and `show` name the pins; gc deletes the aged run with its pin
    (listed; `--dry-run` only lists), keeps the other's until `gc --pins`."""
    storage = tmp_path / ".tracer"
    old = train(tmp_path / "old", pin_checkpoints=True)
    kept = train(tmp_path / "kept", pin_checkpoints=True)
    old_pin, kept_pin = (storage / "pinned" / run / "ckpt-20" for run in (old, kept))
    listing = json.loads(tracer_cli(storage, "runs", "--json"))
    assert {r["run_id"]: r["pinned"] for r in listing} == {
        old: [str(old_pin)],
        kept: [str(kept_pin)],
    }
    assert str(kept_pin) in tracer_cli(storage, "runs")
    shown = tracer_cli(storage, "show", kept)
    assert f"kept (pinned) at {kept_pin}" in shown and "before nan_or_inf at step 23" in shown

    age(storage, old, 40)
    dry = tracer_cli(storage, "gc", "--dry-run")
    assert "would delete 1 run" in dry and "would remove 1 pinned checkpoint" in dry
    assert str(old_pin) in dry and "run deleted" in dry and old_pin.exists()
    done = tracer_cli(storage, "gc")
    assert "removed 1 pinned checkpoint" in done and str(old_pin) in done
    assert not (storage / "pinned" / old).exists() and kept_pin.exists()

    assert "Nothing to delete" in tracer_cli(storage, "gc")
    assert "would remove 1 pinned" in tracer_cli(storage, "gc", "--pins", "--dry-run")
    removed = tracer_cli(storage, "gc", "--pins")
    assert str(kept_pin) in removed and "--pins" in removed and not kept_pin.exists()
    with QueryEngine(str(storage)) as query:
        healthy = query.last_healthy_checkpoint(kept)
        [pin] = query.pinned_checkpoints(kept)
    assert healthy is not None and healthy["pinned_path"] is None
    assert pin["pinned_path"] == str(kept_pin) and not pin["exists"]
    assert "(removed)" in tracer_cli(storage, "show", kept)


def test_retention_at_init_removes_the_pins_of_the_runs_it_deletes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = tmp_path / ".tracer"
    old = train(tmp_path / "old", pin_checkpoints=True)
    age(storage, old, 40)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        tracer.init(project="pins", retention_days=30)
        tracer.finish()
    assert not (storage / "pinned" / old).exists()
    assert f"removed pinned checkpoint {storage / 'pinned' / old / 'ckpt-20'}" in caplog.text


def test_dashboard_payload_and_report_name_the_pin_escaped(tmp_path: Path) -> None:
    """The run view's model saves carry the pinned path (the dashboard and the report draw
    them with one table module); the report's header names it, escaped as text."""
    from tracer.analysis.payloads import run_payload
    from tracer.report import render_report

    hostile = tmp_path / "<img src=x onerror=alert(1)>&"
    run_id = train(hostile, pin_checkpoints=True)
    pinned = str(tmp_path / ".tracer" / "pinned" / run_id / "ckpt-20")
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        saves = run_payload(query, run_id)["model_saves"]
        html = render_report(query, [run_id])
    assert [(s["step"], s["pinned_path"]) for s in saves if s["pinned_path"]] == [(20, pinned)]
    assert all(s["pinned_path"] is None for s in saves if s["step"] != 20)
    header = html.split("<script", 1)[0]
    assert f"<dt>Pinned at</dt><dd>{html_escape(pinned)}</dd>" in header
    assert "<img" not in header


def test_a_relative_save_path_is_pinned_and_named_as_recorded() -> None:
    run_id = train(Path("relative"), pin_checkpoints=True)
    with QueryEngine() as query:
        healthy = query.last_healthy_checkpoint(run_id)
    assert healthy is not None and healthy["path"] == os.path.join("relative", "ckpt-20")
    assert healthy["pinned_path"] == os.path.abspath(f".tracer/pinned/{run_id}/ckpt-20")


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path (the tmpfs /dev/shm), where a hard link
    from tmp_path is impossible (EXDEV)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to save checkpoints on")
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="tracer-pin-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_across_filesystems_the_pin_is_a_whole_copy(
    tmp_path: Path, other_filesystem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints on another filesystem than the store cannot be linked: the pin is copied
    (off the training thread), complete by the end of the run, with a warning that says so."""
    with caplog.at_level(logging.WARNING, logger="tracer"):
        run_id = train(other_filesystem, keep=None, pin_checkpoints=True)
    [pin] = list_pins(str(tmp_path / ".tracer"), run_id)
    assert (pin.name, pin.partial) == ("ckpt-20", False)
    original, pinned = other_filesystem / "ckpt-20", Path(pin.path)
    for relative in ("model.pt", "nested/note.txt"):
        assert (pinned / relative).read_bytes() == (original / relative).read_bytes()
        assert not os.path.samefile(pinned / relative, original / relative)
    assert "could not hard-link" in caplog.text
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        [event] = query.storage.get_events(run_id, "checkpoint_pinned")
    assert event["data"]["method"] == "copy"


def test_a_resumed_run_clears_the_staging_a_killed_process_left_and_pins(tmp_path: Path) -> None:
    """A killed process leaves `.staging/` behind (its slots numbered as the next process's
    would be); the resumed run sets it aside, removes it, and pins its own save."""
    storage = tmp_path / ".tracer"
    run_id = train(tmp_path / "first", nan_step=None, pin_checkpoints=True)
    stale = storage / "pinned" / run_id / ".staging" / "1"
    stale.mkdir(parents=True)
    (stale / "model.pt").write_bytes(b"left by a killed process")
    train(tmp_path / "second", resume=run_id, pin_checkpoints=True)
    assert [p.name for p in list_pins(str(storage), run_id)] == ["ckpt-20"]
    assert sorted(os.listdir(storage / "pinned" / run_id)) == ["ckpt-20"]
    with QueryEngine(str(storage)) as query:
        healthy = query.last_healthy_checkpoint(run_id)
    assert healthy is not None and healthy["step"] == 40 + 20  # the run's own step count
    assert healthy["pinned_path"] == str(storage / "pinned" / run_id / "ckpt-20")


@pytest.mark.parametrize(("pin_on", "pinned"), [("warning", ["m40.pt"]), ("critical", [])])
def test_pin_on_is_the_least_severity_that_pins(
    tmp_path: Path, pin_on: str, pinned: list[str]
) -> None:
    """A loss spike is a warning: it pins with pin_on="warning", not at the default."""
    (tmp_path / "c").mkdir()
    run = tracer.init(project="pins", pin_checkpoints=True, pin_on=pin_on, **INLINE)
    for step in range(80):
        tracer.log({"loss": 100.0 if step == 50 else 1.0 / (step + 1)})
        if step % 10 == 0:
            (tmp_path / "c" / f"m{step}.pt").write_text(str(step))
            tracer.record_model_save(f"c/m{step}.pt")
        tracer.step()
    tracer.finish()
    with QueryEngine() as query:
        kinds = {(a["anomaly_type"], a["severity"]) for a in query.get_anomalies(run.run_id)}
    assert kinds == {("loss_spike", "warning")}
    assert [p.name for p in list_pins(str(tmp_path / ".tracer"))] == pinned


def test_an_episode_that_turns_critical_pins_then(tmp_path: Path) -> None:
    """A divergence opens as a warning (below pin_on) and turns critical as the loss keeps
    climbing: the hook announces it again, and the save before its onset is pinned then."""
    import random

    noise = random.Random(1)
    saves = tmp_path / "saves"
    saves.mkdir()
    run = tracer.init(
        project="pins",
        storage_path=str(tmp_path / "store"),
        pin_checkpoints=True,
        pin_on="critical",
        detectors={"loss_plateau": False},
    )
    for step in range(400):
        climb = 1.03 ** max(0, step - 200)
        tracer.log({"loss": (1.0 + 0.01 * noise.gauss(0, 1)) * climb})
        if step % 10 == 0:
            path = saves / f"step-{step}.pt"
            path.write_bytes(b"weights at step %d" % step)
            tracer.record_model_save(str(path), step=step)
        tracer.step()
        run.flush()  # one step per batch: the episode is seen opening, then worsening
    tracer.finish()
    with QueryEngine(str(tmp_path / "store")) as query:
        (episode,) = [
            a for a in query.get_anomalies(run.run_id) if a["anomaly_type"] == "loss_divergence"
        ]
        healthy = query.last_healthy_checkpoint(run.run_id)
    assert episode["severity"] == "critical"
    assert healthy is not None and healthy["pinned_path"] is not None
    saved_step = max(s for s in range(0, 400, 10) if s < episode["step"])
    assert Path(healthy["pinned_path"]).read_bytes() == b"weights at step %d" % saved_step
