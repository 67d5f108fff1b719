"""Checkpoints and copies: `accelerator.save_state` / `load_state` continue one Tracer run, a
job that dies stores the optimizer steps it really took, and a pickled or deep-copied tracker
carries no live state of the process that made it.

The in-process tests build a new Accelerator for the resumed job (Accelerate's singletons
reset, as in a new process); the example tests run `example_checkpointing.py`, Accelerate's
`complete_nlp_example.py` in miniature, as real separate processes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from accelerate import Accelerator

import tracer_accelerate
from tests.accelerate.helpers import (
    PROJECT,
    batch,
    loss_of,
    make_model,
    reference_norms,
    reset_accelerate,
)
from tracer.analysis import QueryEngine
from tracer.integrations import AccelerateTracker

LR = 0.05
EXAMPLE = Path(__file__).with_name("example_checkpointing.py")
REPOSITORY = Path(__file__).parents[2]
SCRIPT_TIMEOUT_S = 180.0
STEPS_PER_EPOCH = 4  # 32 training rows, batches of 8


def train_job(
    steps: int,
    *,
    resume_from: Optional[Path] = None,
    save_to: Optional[Path] = None,
    watch: bool = True,
    log_before_load: bool = False,
) -> AccelerateTracker:
    """One job of a resumable script, in the order of Accelerate's examples: init_trackers,
    prepare, (watch,) load_state when resuming, `steps` optimizer steps logging the loss at
    the script's own step count, save_state, end_training."""
    reset_accelerate()
    tracker = AccelerateTracker(PROJECT, run_name="resumable")
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers(PROJECT, config={"lr": LR})
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    if watch:
        tracer_accelerate.watch(accelerator, model, optimizer)
    if log_before_load:
        accelerator.log({"setup_seconds": 1.0})
    completed = 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        completed = int(resume_from.name.split("_")[-1])  # the script's own count
    for _ in range(steps):
        x, y = batch(completed)
        loss = loss_of(model, x, y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        completed += 1
        accelerator.log({"loss": loss.detach()}, step=completed)
    if save_to is not None:
        accelerator.save_state(str(save_to / f"step_{completed}"))
    accelerator.end_training()
    return tracker


def stored_runs(path: Path) -> list[dict[str, Any]]:
    with QueryEngine(str(path / ".tracer")) as query:
        return list(query.list_runs(PROJECT))


def history(path: Path, run_id: str, metric: str) -> dict[str, list[Any]]:
    with QueryEngine(str(path / ".tracer")) as query:
        return query.get_metric_history(run_id, metric)


def test_load_state_continues_the_run_at_the_same_steps(tmp_path: Path) -> None:
    """3 optimizer steps, save_state, end; a new Accelerator whose init_trackers comes before
    load_state trains 3 more: one run, losses and gradients both at steps 1-6 (the norms
    those of an uninterrupted run: the weights were restored), 6 steps, finished."""
    first = train_job(3, save_to=tmp_path / "ckpt")
    assert first.run is not None
    train_job(3, resume_from=tmp_path / "ckpt" / "step_3")
    runs = stored_runs(tmp_path)
    assert len(runs) == 1, runs  # no second run, no stray empty one
    run = runs[0]
    assert (run["run_id"], run["status"], run["total_steps"]) == (
        first.run.run_id,
        "finished",
        6,
    )
    assert run["config"] == {"lr": LR}
    assert history(tmp_path, run["run_id"], "loss")["steps"] == [1, 2, 3, 4, 5, 6]
    norms = history(tmp_path, run["run_id"], "grad/global_norm")
    assert norms["steps"] == [1, 2, 3, 4, 5, 6]
    assert norms["values"] == pytest.approx(reference_norms(6, 1, LR), rel=1e-5)
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        saves = query.storage.get_events(run["run_id"], "model_saved")
    assert [(e["step"], Path(e["data"]["path"]).name) for e in saves] == [(3, "step_3")]
    saved = json.loads((tmp_path / "ckpt" / "step_3" / "tracer_run.json").read_text())
    assert (saved["run_id"], saved["optimizer_steps"]) == (run["run_id"], 3)


def test_a_checkpoint_without_tracer_starts_a_new_run(tmp_path: Path) -> None:
    """A checkpoint saved without the watch (before Tracer was added) loads as before; the
    resumed job is a new run that counts its own optimizer steps from 1."""
    train_job(2, save_to=tmp_path / "ckpt", watch=False)
    (old,) = stored_runs(tmp_path)
    train_job(2, resume_from=tmp_path / "ckpt" / "step_2")
    runs = {run["run_id"]: run for run in stored_runs(tmp_path)}
    assert len(runs) == 2
    runs.pop(old["run_id"])
    (new,) = runs.values()
    assert (new["status"], new["total_steps"]) == ("finished", 2)
    assert history(tmp_path, new["run_id"], "grad/global_norm")["steps"] == [1, 2]


def test_load_state_after_the_run_started_keeps_that_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A script that logs before load_state has started a new run by then: Tracer keeps it
    (one run per job) and says why the checkpoint's run was not continued."""
    train_job(2, save_to=tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="tracer_accelerate"):
        train_job(1, resume_from=tmp_path / "ckpt" / "step_2", log_before_load=True)
    assert len(stored_runs(tmp_path)) == 2
    assert any("load_state" in r.getMessage() for r in caplog.records)


def test_step_other_than_the_optimizer_step_lands_at_the_optimizer_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the watch counting, Tracer's step is the optimizer step: values that
    accelerator.log gives another step (an epoch, as Accelerate's examples do) are recorded
    at the current optimizer step, with one warning."""
    tracker = AccelerateTracker(PROJECT)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers(PROJECT)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    tracer_accelerate.watch(accelerator, model, optimizer)
    with caplog.at_level(logging.WARNING, logger="tracer_accelerate"):
        for epoch in range(2):
            for micro in range(3):
                x, y = batch(epoch * 3 + micro)
                accelerator.backward(loss_of(model, x, y))
                optimizer.step()
                optimizer.zero_grad()
            accelerator.log({"epoch_loss": float(epoch)}, step=epoch)
    accelerator.end_training()
    assert tracker.run is not None
    assert history(tmp_path, tracker.run.run_id, "epoch_loss")["steps"] == [3, 6]
    assert sum("optimizer step" in r.getMessage() for r in caplog.records) == 1
    (run,) = stored_runs(tmp_path)
    assert run["total_steps"] == 6


def test_a_copied_tracker_holds_nothing_of_this_process(tmp_path: Path) -> None:
    """pickle and deepcopy of a tracker in use: the copies have no run and no step counter of
    the original's watch (it belongs to this process), and plan the original's run id, so a
    copy used after the original ended continues that run."""
    tracker = AccelerateTracker(PROJECT, checkpoint_interval=5)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers(PROJECT)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    tracer_accelerate.watch(accelerator, model, optimizer)
    for step in range(2):
        x, y = batch(step)
        accelerator.backward(loss_of(model, x, y))
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": 1.0 / (step + 1)}, step=step + 1)
    assert tracker.run is not None and tracker.optimizer_steps is not None
    run_id = tracker.run.run_id
    copies = [pickle.loads(pickle.dumps(tracker)), copy.deepcopy(tracker)]
    for duplicate in copies:
        assert duplicate.run is None
        assert duplicate.optimizer_steps is None
        assert duplicate.planned_run_id == run_id
        assert duplicate.settings["checkpoint_interval"] == 5
    accelerator.end_training()
    restored = copies[0]
    restored.log({"late": 1.0}, step=5)
    restored.finish()
    (run,) = stored_runs(tmp_path)
    assert run["run_id"] == run_id and run["status"] == "finished"
    assert history(tmp_path, run_id, "late")["steps"] == [5]


# -- Accelerate's example, as separate processes ----------------------------------------------
def run_example(cwd: Path, *args: str, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    """example_checkpointing.py with tracking, in a new process in `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    env["HF_HUB_OFFLINE"] = "1"
    for name in ("TRACER_STORAGE_PATH", "TRACER_MODE"):
        env.pop(name, None)
    command = [sys.executable, str(EXAMPLE), "--with_tracking", "--output_dir", "ckpt", *args]
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the example did not finish in {SCRIPT_TIMEOUT_S:.0f} s: {error.stderr!r}")
    assert done.returncode == returncode, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_example_killed_mid_training_then_resumed_from_a_step_checkpoint(tmp_path: Path) -> None:
    """Checkpoints every 3 batches; the job dies before optimizer step 7: its run is failed
    with 6 steps (the steps done, not 7). The next job resumes from step_6 (skipping the
    batches done) and trains to the end: one run, finished with 12 steps, each step's
    gradients once, the per-epoch metrics at the optimizer step each epoch ended."""
    done = run_example(tmp_path, "--checkpointing_steps", "3", "--fail_at_step", "7", returncode=1)
    assert "RuntimeError: killed before step 7" in done.stderr
    (failed,) = stored_runs(tmp_path)
    assert (failed["status"], failed["total_steps"]) == ("failed", 6)
    assert "killed before step 7" in (failed["error"] or "")
    assert history(tmp_path, failed["run_id"], "grad/global_norm")["steps"] == list(range(1, 7))

    run_example(tmp_path, "--checkpointing_steps", "3", "--resume_from_checkpoint", "ckpt/step_6")
    (run,) = stored_runs(tmp_path)
    assert run["run_id"] == failed["run_id"]
    assert (run["status"], run["total_steps"], run["error"]) == ("finished", 12, None)
    assert history(tmp_path, run["run_id"], "grad/global_norm")["steps"] == list(range(1, 13))
    assert history(tmp_path, run["run_id"], "eval_mse")["steps"] == [4, 8, 12]
    assert history(tmp_path, run["run_id"], "epoch")["values"] == [0.0, 1.0, 2.0]


@pytest.mark.slow
def test_example_resumed_from_an_epoch_checkpoint_continues_the_finished_run(
    tmp_path: Path,
) -> None:
    """Two epochs, a checkpoint after each, the job ends (run finished, 8 steps); a longer
    job resumes from epoch_1 and trains epoch 2: the same run, finished with 12 steps."""
    run_example(tmp_path, "--checkpointing_steps", "epoch", "--num_epochs", "2")
    (first,) = stored_runs(tmp_path)
    assert (first["status"], first["total_steps"]) == ("finished", 2 * STEPS_PER_EPOCH)

    run_example(
        tmp_path,
        "--checkpointing_steps",
        "epoch",
        "--num_epochs",
        "3",
        "--resume_from_checkpoint",
        "ckpt/epoch_1",
    )
    (run,) = stored_runs(tmp_path)
    assert run["run_id"] == first["run_id"]
    assert (run["status"], run["total_steps"]) == ("finished", 3 * STEPS_PER_EPOCH)
    assert history(tmp_path, run["run_id"], "grad/global_norm")["steps"] == list(range(1, 13))
    assert history(tmp_path, run["run_id"], "eval_mse")["steps"] == [4, 8, 12]
