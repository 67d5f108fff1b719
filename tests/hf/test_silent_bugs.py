"""The silent-bug probe under a real `transformers.Trainer`: the callback hands the Trainer's
optimizer (Accelerate's wrapper of it) to `run.watch`, so the probe samples every 10th real
optimizer step. A healthy training with gradient accumulation and evaluation reports
nothing; a learning rate of 0 and a custom optimizer that leaves the embeddings (and the
head tied to them) out are caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from tests.hf.helpers import TokenDataset, only_run, tiny_model, tracer_callback, training_args
from tests.silent_reports import ALL_SILENT_ON, probe_steps, report_types, silent_reports
from tracer.analysis import QueryEngine


def train(tmp_path: Path, model: Any = None, optimizers: Any = (None, None), **args: Any) -> str:
    """A Trainer with the Tracer callback (every silent-bug detector on), trained; the run's
    id. `optimizers` as `Trainer(optimizers=...)`; `args` override `training_args`."""
    settings: dict[str, Any] = {
        "gradient_accumulation_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "max_steps": 22,
        **args,
    }
    trainer = Trainer(
        model=model if model is not None else tiny_model(),
        args=training_args(tmp_path / "out", **settings),
        train_dataset=TokenDataset(64),
        eval_dataset=TokenDataset(8, seed=1),
        callbacks=[tracer_callback(**ALL_SILENT_ON)],
        optimizers=optimizers,
    )
    trainer.train()
    with QueryEngine(storage_path="./.tracer") as query:
        return str(only_run(query.list_runs())["run_id"])


def test_healthy_training_with_accumulation_and_evaluation_reports_nothing(
    tmp_path: Path,
) -> None:
    """25 optimizer steps of 2 micro-batches, evaluation (which calls eval()) every 10 steps,
    every silent-bug detector on: no report. The probe samples optimizer steps 1, 11 and 21
    (every 10th real step, numbered as the Trainer's global_step), not micro-batches."""
    run_id = train(
        tmp_path,
        max_steps=25,
        gradient_accumulation_steps=2,
        eval_strategy="steps",
        eval_steps=10,
    )
    assert silent_reports(run_id) == []
    assert probe_steps(run_id) == {
        "optimizer/lr/0": [1, 11, 21],
        "optimizer/update_ratio_median": [1, 11, 21],
    }


def test_learning_rate_zero_is_critical(tmp_path: Path) -> None:
    """`learning_rate=0.0`: no layer moves at three samples in a row (steps 1, 11, 21)."""
    run_id = train(tmp_path, learning_rate=0.0)
    assert report_types(run_id) == {"parameters_not_updated": "critical"}


def test_embeddings_left_out_of_a_custom_optimizer_are_named(tmp_path: Path) -> None:
    """`optimizers=(AdamW over the transformer blocks only, None)`: the embeddings (and the
    LM head tied to them) and the final norm have gradients but no param group."""
    model = tiny_model()
    blocks = [p for name, p in model.named_parameters() if name.startswith("transformer.h.")]
    optimizer = torch.optim.AdamW(blocks, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run_id = train(tmp_path, model=model, optimizers=(optimizer, scheduler))
    assert report_types(run_id) == {"parameters_outside_optimizer": "warning"}
    report = silent_reports(run_id)[0]
    assert "transformer.wte.weight" in report["message"], report["message"]
