"""Failures inside `trainer.fit()`: an exception ends the run "failed" with the error (Lightning's
`on_exception`), in-process and in a process where it is uncaught; a NaN mid-training is found
at its global step, online and offline, and `halt_on=["nan_or_inf"]` stops the Trainer early.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.core.helpers import open_store
from tests.lightning.helpers import (
    NAMESPACES,
    PROJECT,
    make_trainer,
    only_run,
    tiny_module,
    tracer_callback,
)
from tracer.analysis import AnomalyDetector, QueryEngine

RAISE_STEP = 5
NAN_STEP = 6
CHILD_TIMEOUT_S = 120.0


def nan_key(anomaly: dict[str, Any]) -> tuple[int, str, str]:
    return (anomaly["step"], anomaly["anomaly_type"], anomaly["subject"])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_exception_in_training_step_fails_the_run(ns: str) -> None:
    """`training_step` raising in optimizer step 5 propagates out of `fit`; the run is closed
    "failed" with the exception's type and message, the steps done before it stored."""
    callback = tracer_callback()
    trainer = make_trainer(ns, [callback], accumulate_grad_batches=2)
    with pytest.raises(RuntimeError, match=f"boom at step {RAISE_STEP}"):
        trainer.fit(tiny_module(ns, raise_at=RAISE_STEP))
    assert trainer.global_step == RAISE_STEP - 1
    assert callback.run is not None and callback.run.state != "active"

    with QueryEngine() as query:
        run = only_run(query.list_runs(), PROJECT)
        loss = query.get_metric_history(run["run_id"], "train_loss")
    assert run["status"] == "failed"
    assert run["error"] == f"RuntimeError: boom at step {RAISE_STEP}"
    assert run["end_time"] is not None
    assert run["total_steps"] == RAISE_STEP - 1  # the optimizer steps done, not the one that broke
    assert loss["steps"] == list(range(1, RAISE_STEP))


UNCAUGHT = """
    import torch
    from tests.lightning.helpers import make_trainer, tiny_module, tracer_callback

    torch.set_num_threads(1)
    trainer = make_trainer("lightning.pytorch", [tracer_callback()])
    trainer.fit(tiny_module("lightning.pytorch", raise_at={raise_at}))
"""


def test_uncaught_exception_in_a_process_fails_the_run(tmp_path: Path) -> None:
    """A script whose `fit` raises and is not caught exits non-zero; the run it leaves is
    "failed" with the error, not "running" nor "finished"."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(UNCAUGHT.format(raise_at=RAISE_STEP)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    env.pop("TRACER_STORAGE_PATH", None)
    env.pop("TRACER_MODE", None)
    finished = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert finished.returncode != 0
    assert f"boom at step {RAISE_STEP}" in finished.stderr
    with QueryEngine(str(tmp_path / ".tracer")) as query:
        run = only_run(query.list_runs(), PROJECT)
    assert run["status"] == "failed"
    assert run["error"] is not None and f"boom at step {RAISE_STEP}" in run["error"]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_nan_is_found_at_its_global_step_online_and_offline(ns: str) -> None:
    """The loss of optimizer step 6 is made NaN (so its gradients, then the weights, are
    NaN); training goes on (no halt_on). The first nan_or_inf anomalies are at step 6, for
    `train_loss` and for the gradients (naming a layer); the offline detector agrees."""
    callback = tracer_callback()
    trainer = make_trainer(ns, [callback], max_steps=10)
    trainer.fit(tiny_module(ns, nan_at=NAN_STEP))
    assert trainer.global_step == 10

    with QueryEngine() as query:
        run = only_run(query.list_runs(), PROJECT)
        run_id = run["run_id"]
        online = query.get_anomalies(run_id, ["nan_or_inf"])
        grad = query.get_metric_history(run_id, "grad/global_norm")
        loss = query.get_metric_history(run_id, "train_loss")
    assert run["status"] == "finished"
    norms = dict(zip(grad["steps"], grad["values"], strict=True))
    assert all(math.isfinite(norms[s]) for s in range(1, NAN_STEP))
    assert math.isnan(norms[NAN_STEP])
    losses = dict(zip(loss["steps"], loss["values"], strict=True))
    assert all(math.isfinite(losses[s]) for s in range(1, NAN_STEP))
    assert math.isnan(losses[NAN_STEP])

    assert online, "no nan_or_inf anomaly stored"
    assert min(a["step"] for a in online) == NAN_STEP
    at_step = {a["subject"] for a in online if a["step"] == NAN_STEP}
    assert "train_loss" in at_step, online
    assert any(s.startswith("net.") for s in at_step), online  # a named parameter
    with open_store() as storage:
        offline = AnomalyDetector(storage).detect_nan_inf(run_id)
    assert sorted(map(nan_key, offline)) == sorted(map(nan_key, online))


@pytest.mark.parametrize("ns", NAMESPACES)
def test_halt_on_nan_stops_the_trainer_and_fails_the_run(ns: str) -> None:
    """With `halt_on=["nan_or_inf"]` (unbuffered writes) the Trainer stops soon after the NaN
    step, well before `max_steps`; the run is "failed" saying why, at the step it stopped."""
    max_steps = 60
    callback = tracer_callback(halt_on=["nan_or_inf"], write_buffer_size=1)
    trainer = make_trainer(ns, [callback], max_steps=max_steps)
    trainer.fit(tiny_module(ns, nan_at=NAN_STEP))

    stopped = trainer.global_step
    assert NAN_STEP <= stopped < max_steps
    with QueryEngine() as query:
        run = only_run(query.list_runs(), PROJECT)
        anomalies = query.get_anomalies(run["run_id"], ["nan_or_inf"])
    assert run["status"] == "failed"
    assert run["error"] is not None and "halt_on" in run["error"]
    assert run["total_steps"] == stopped
    assert min(a["step"] for a in anomalies) == NAN_STEP
