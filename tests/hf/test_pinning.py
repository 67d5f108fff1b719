"""Keeping the last healthy checkpoint under a real `transformers.Trainer` whose rotation
(`save_total_limit=2`) deletes it: saves every 2 steps, NaN logits from step 9 on (the weights
stay NaN after it, as in a real divergence). The save of step 8 must survive, pinned under
`<storage>/pinned/<run>/checkpoint-8`, with finite weights, named by
`last_healthy_checkpoint`; and a halt names it for the restart."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.hf.helpers import (
    PROJECT,
    PoisonForwardAtStep,
    make_trainer,
    only_run,
    tiny_model,
    tracer_callback,
)
from tracer.actions.pins import list_pins
from tracer.analysis import QueryEngine

NAN_STEP = 9
ROTATION = {"save_steps": 2, "save_total_limit": 2, "eval_strategy": "no", "max_steps": 16}


def test_rotation_deletes_the_healthy_checkpoint_but_the_pin_keeps_it(tmp_path: Path) -> None:
    model = tiny_model()
    poison = PoisonForwardAtStep(model, NAN_STEP)
    callback = tracer_callback(pin_checkpoints=True, flush_interval=0.05)
    output = tmp_path / "out"
    make_trainer(output, [callback, poison], model=model, **ROTATION).train()

    assert sorted(p.name for p in output.iterdir()) == ["checkpoint-14", "checkpoint-16"]
    with QueryEngine() as query:
        run_id = only_run(query.list_runs(PROJECT))["run_id"]
        healthy = query.last_healthy_checkpoint(run_id)
        pinned_events = query.storage.get_events(run_id, "checkpoint_pinned")
    pins = list_pins(str(tmp_path / ".tracer"), run_id)
    assert [p.name for p in pins] == ["checkpoint-8"]
    pinned = Path(pins[0].path)
    assert healthy is not None
    assert healthy["step"] == 8 and healthy["path"] == str(output / "checkpoint-8")
    assert healthy["pinned_path"] == str(pinned)
    assert [e["data"]["pinned_path"] for e in pinned_events] == [str(pinned)]
    weights = load_file(pinned / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    assert (pinned / "trainer_state.json").is_file() and (pinned / "tracer_run.json").is_file()
    last = load_file(output / "checkpoint-16" / "model.safetensors")
    assert any(not bool(torch.isfinite(t).all()) for t in last.values())  # what rotation kept


def test_halt_names_the_pinned_checkpoint_to_resume_from(tmp_path: Path) -> None:
    """halt_on stops the Trainer early; the run's stored error names the pinned checkpoint,
    and a new Trainer resumes from it (its trainer_state says step 8)."""
    model = tiny_model()
    poison = PoisonForwardAtStep(model, NAN_STEP)
    callback = tracer_callback(
        pin_checkpoints=True, halt_on=["nan_or_inf"], flush_interval=0.05, async_writes=False
    )
    output = tmp_path / "out"
    trainer = make_trainer(output, [callback, poison], model=model, **ROTATION)
    trainer.train()
    assert trainer.state.global_step < 16
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
    pinned = tmp_path / ".tracer" / "pinned" / run["run_id"] / "checkpoint-8"
    assert run["status"] == "failed"
    assert f"last healthy checkpoint: {pinned}" in (run["error"] or "")
    resumed = make_trainer(tmp_path / "again", [], model=tiny_model(), **ROTATION)
    resumed.train(resume_from_checkpoint=str(pinned))
    assert resumed.state.global_step == 16
    assert all(math.isfinite(float(p.detach().abs().sum())) for p in resumed.model.parameters())
