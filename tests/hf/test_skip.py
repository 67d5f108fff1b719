"""`on_nonfinite="skip"` under a real `transformers.Trainer`: the NaN comes from the model (a
forward hook makes the logits NaN in every micro-batch of chosen optimizer steps, so every
gradient of those steps is NaN). The callback skips those steps at `on_pre_optimizer_step`:
the weights stay as they were and finite, the skip is stored, and a streak of skips stops the
Trainer through the callback's halt path, the run failed with the reason."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tests.hf.helpers import (
    PROJECT,
    PoisonForwardAtStep,
    make_trainer,
    only_run,
    tiny_model,
    tracer_callback,
)
from tracer.analysis import QueryEngine


class WeightsAtStepEnd(TrainerCallback):
    """The model's weights (one flat copy) after each optimizer step, by global step."""

    def __init__(self) -> None:
        self.weights: dict[int, torch.Tensor] = {}

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        self.weights[state.global_step] = flat.clone()


def train(tmp_path: Path, nan_steps: tuple[int, ...], max_steps: int, **settings: Any) -> Any:
    model = tiny_model()
    poisons = [PoisonForwardAtStep(model, step) for step in nan_steps]
    weights = WeightsAtStepEnd()
    callback = tracer_callback(on_nonfinite="skip", **settings)
    trainer = make_trainer(
        tmp_path / "out",
        [callback, weights, *poisons],
        model=model,
        max_steps=max_steps,
        eval_strategy="no",
        save_strategy="no",
    )
    trainer.train()
    assert all(p.poisoned_batches == 4 for p in poisons)  # 4 accumulated micro-batches each
    return trainer, weights.weights


def test_a_nan_step_is_skipped_counted_and_the_weights_stay_finite(tmp_path: Path) -> None:
    trainer, weights = train(tmp_path, (6,), max_steps=10)
    assert trainer.state.global_step == 10
    assert torch.equal(weights[6], weights[5])  # step 6 changed nothing
    assert not torch.equal(weights[7], weights[6])  # and training went on
    assert all(bool(w.isfinite().all()) for w in weights.values())
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        skipped = query.get_metric_history(run["run_id"], "optimizer/skipped_step")
        norms = query.get_metric_history(run["run_id"], "grad/global_norm")
    assert run["status"] == "finished"
    assert skipped["steps"] == [6]
    at_step = dict(zip(norms["steps"], norms["values"], strict=True))
    assert math.isnan(at_step[6])
    assert all(math.isfinite(v) for s, v in at_step.items() if s != 6)


def test_skips_in_a_row_stop_the_trainer_and_fail_the_run(tmp_path: Path) -> None:
    trainer, weights = train(tmp_path, (4, 5, 6), max_steps=30, max_consecutive_skips=3)
    assert trainer.state.global_step == 6  # stopped at the end of the third skip
    assert torch.equal(weights[6], weights[3])
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        skipped = query.get_metric_history(run["run_id"], "optimizer/skipped_step")
    assert run["status"] == "failed"
    assert "max_consecutive_skips=3" in (run["error"] or "")
    assert run["total_steps"] == 6
    assert skipped["steps"] == [4, 5, 6]
