"""A NaN mid-training under a real `transformers.Trainer`: found at its global step, online and
offline, and with `halt_on=["nan_or_inf"]` the Trainer stops early and the run fails.

The NaN comes from the model itself: a forward hook on the output layer makes the logits NaN
in every micro-batch of one known optimizer step, so the loss and every gradient of that step
are NaN (and the weights after it, as in a real divergence). HF's loss logging filters NaN
losses (`logging_nan_inf_filter`), so what reveals it is the captured gradients and HF's own
`grad_norm`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.core.helpers import open_store
from tests.hf.helpers import (
    PROJECT,
    PoisonForwardAtStep,
    make_trainer,
    only_run,
    tiny_model,
    tracer_callback,
)
from tracer.analysis import AnomalyDetector, QueryEngine

NAN_STEP = 6


def nan_key(anomaly: dict[str, Any]) -> tuple[int, str, str]:
    return (anomaly["step"], anomaly["anomaly_type"], anomaly["subject"])


def test_nan_is_found_at_its_global_step_online_and_offline(tmp_path: Path) -> None:
    """Training continues (no halt_on); the first nan_or_inf anomaly is at the poisoned global
    step, one for the gradients (naming a layer) and one for HF's `grad_norm` logged there,
    nothing before it; the offline `AnomalyDetector` finds the same ones from storage."""
    model = tiny_model()
    poison = PoisonForwardAtStep(model, NAN_STEP)
    callback = tracer_callback()
    trainer = make_trainer(tmp_path / "out", [callback, poison], model=model, max_steps=10)
    trainer.train()
    assert poison.poisoned_batches == 4  # the step's 4 accumulated micro-batches
    assert trainer.state.global_step == 10

    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        run_id = run["run_id"]
        online = query.get_anomalies(run_id, ["nan_or_inf"])
        grad = query.get_metric_history(run_id, "grad/global_norm")
        grad_norm = query.get_metric_history(run_id, "grad_norm")
    assert run["status"] == "finished"
    norms = dict(zip(grad["steps"], grad["values"], strict=True))
    assert all(math.isfinite(norms[s]) for s in range(1, NAN_STEP))
    assert math.isnan(norms[NAN_STEP])
    assert math.isnan(dict(zip(grad_norm["steps"], grad_norm["values"], strict=True))[NAN_STEP])

    assert online, "no nan_or_inf anomaly stored"
    assert min(a["step"] for a in online) == NAN_STEP
    at_step = {a["subject"]: a for a in online if a["step"] == NAN_STEP}
    assert "grad_norm" in at_step
    layers = [s for s in at_step if s != "grad_norm"]
    assert layers and layers[0].startswith("transformer."), at_step  # a named parameter
    assert all(a["severity"] == "critical" for a in online)

    with open_store() as storage:
        offline = AnomalyDetector(storage).detect_nan_inf(run_id)
    assert sorted(map(nan_key, offline)) == sorted(map(nan_key, online))


def test_halt_on_nan_stops_the_trainer_and_fails_the_run(tmp_path: Path) -> None:
    """With `halt_on=["nan_or_inf"]` the Trainer stops well before `max_steps` once the NaN
    is found, and the run is "failed" with the reason, at the step training stopped."""
    max_steps = 60
    model = tiny_model()
    poison = PoisonForwardAtStep(model, NAN_STEP)
    callback = tracer_callback(halt_on=["nan_or_inf"], write_buffer_size=1)
    trainer = make_trainer(
        tmp_path / "out",
        [callback, poison],
        model=model,
        max_steps=max_steps,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
    )
    trainer.train()

    stopped = trainer.state.global_step
    assert NAN_STEP <= stopped < max_steps
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        anomalies = query.get_anomalies(run["run_id"], ["nan_or_inf"])
    assert run["status"] == "failed"
    assert run["error"] is not None and "halt_on" in run["error"]
    assert run["total_steps"] == stopped
    assert min(a["step"] for a in anomalies) == NAN_STEP
