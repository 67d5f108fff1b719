"""A real transformers.Trainer with gradient accumulation, evaluation and saving, traced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tracer.analysis import QueryEngine

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class TokenDataset(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, rows: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (rows, 16), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def test_steps_captures_evaluations_and_saves_follow_the_trainer(tmp_path: Path) -> None:
    from tracer.integrations import TransformersCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        max_steps=12,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=6,
        max_grad_norm=1.0,
        report_to=[],
        use_cpu=True,
        learning_rate=1e-3,
        disable_tqdm=True,
    )
    callback = TransformersCallback(project="hf", checkpoint_interval=5)
    trainer = transformers.Trainer(
        model=transformers.GPT2LMHeadModel(config),
        args=args,
        train_dataset=TokenDataset(256, 0),
        eval_dataset=TokenDataset(16, 1),
        callbacks=[callback],
    )
    trainer.train()
    assert callback.run is not None
    run_id = callback.run.run_id
    with QueryEngine() as query:
        summary = query.get_run_summary(run_id)
        history = {
            m: query.get_metric_history(run_id, m)["steps"]
            for m in ("loss", "grad_norm", "eval_loss", "grad/global_norm")
        }
        saves = query.storage.get_events(run_id, "model_saved")
    assert summary["status"] == "finished"
    assert summary["total_steps"] == trainer.state.global_step == 12
    assert history["grad/global_norm"] == list(range(1, 13))  # one capture per optimizer step
    assert history["loss"] == history["grad_norm"] == [2, 4, 6, 8, 10, 12]
    assert history["eval_loss"] == [4, 8, 12]
    assert "train_runtime" in summary["summary"] and "train_runtime" not in summary["final_metrics"]
    assert [(e["step"], Path(e["data"]["path"]).name) for e in saves] == [
        (6, "checkpoint-6"),
        (12, "checkpoint-12"),
    ]
    assert (tmp_path / "out" / "checkpoint-6" / "tracer_run.json").exists()
    assert "training_args" in summary["config"] and "model_config" in summary["config"]
