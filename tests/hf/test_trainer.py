"""`TransformersCallback` on a real `transformers.Trainer`: what one ordinary training stores.

One training (module fixture) of a tiny GPT-2 with gradient accumulation 4, clipping at
0.95, logging every 2, evaluating and saving every 4 of 12 optimizer steps; the tests read
back what it stored. Then the public entry points: `tracer.integrations`, the SEED-API
example as written, and a typo'd setting.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer

from tests.hf.helpers import (
    PROJECT,
    ReferenceNorm,
    TokenDataset,
    make_trainer,
    only_run,
    strictly_increasing,
    tiny_model,
    tracer_callback,
)
from tests.hf.helpers import training_args as tiny_training_args
from tracer.analysis import QueryEngine
from tracer.storage import RunRecord
from tracer_hf import TransformersCallback
from tracer_hf.callback import CAPTURE_POINT, SUMMARY_KEYS
from tracer_hf.checkpoints import RUN_FILE

MAX_STEPS = 12
MAX_GRAD_NORM = 0.95


@dataclass
class Trained:
    """What the module's training left: the stored run and the Trainer's own record."""

    run: RunRecord
    storage: str
    output_dir: Path
    global_step: int
    log_history: list[dict[str, Any]]
    reference_norms: dict[int, float]

    def query(self) -> QueryEngine:
        return QueryEngine(self.storage)

    def history(self, metric: str) -> dict[str, list[Any]]:
        with self.query() as query:
            return query.get_metric_history(self.run["run_id"], metric)

    def logged(self, key: str) -> dict[int, float]:
        """{global step: value} of `key` in the Trainer's log history."""
        return {entry["step"]: entry[key] for entry in self.log_history if key in entry}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("hf-trainer")
    storage = str(root / "store")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = ReferenceNorm()
        callback = tracer_callback(storage_path=storage)
        trainer = make_trainer(
            root / "out",
            [callback, reference],  # the reference runs after Tracer's callback
            max_steps=MAX_STEPS,
            max_grad_norm=MAX_GRAD_NORM,
        )
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    with QueryEngine(storage) as query:
        run = only_run(query.list_runs(PROJECT))
    yield Trained(
        run=run,
        storage=storage,
        output_dir=root / "out",
        global_step=trainer.state.global_step,
        log_history=list(trainer.state.log_history),
        reference_norms=reference.norms,
    )


def test_run_is_finished_with_total_steps_equal_to_global_step(trained: Trained) -> None:
    """One run, "finished", no error, and its step count is the Trainer's `global_step`."""
    assert trained.global_step == MAX_STEPS
    assert trained.run["status"] == "finished"
    assert trained.run["error"] is None
    assert trained.run["total_steps"] == trained.global_step


def test_metric_steps_are_global_steps(trained: Trained) -> None:
    """Train metrics land at the global step HF logged them at, with HF's values; no series
    has a step outside 1..global_step or a step twice."""
    for key in ("loss", "learning_rate", "epoch"):
        logged = trained.logged(key)
        assert sorted(logged) == [2, 4, 6, 8, 10, 12]
        history = trained.history(key)
        assert history["steps"] == sorted(logged), key
        assert history["values"] == pytest.approx([logged[s] for s in history["steps"]])
    with trained.query() as query:
        names = [m["name"] for m in query.storage.list_metrics(trained.run["run_id"])]
        for name in names:
            steps = query.get_metric_history(trained.run["run_id"], name)["steps"]
            assert strictly_increasing(steps), (name, steps)
            assert steps and steps[0] >= 1 and steps[-1] <= trained.global_step, (name, steps)


def test_one_gradient_capture_per_optimizer_step(trained: Trained) -> None:
    """`grad/global_norm` has exactly one point per optimizer step, 1..max_steps, not one per
    micro-batch (accumulation 4), and the capture point is the HF pre-optimizer event."""
    history = trained.history("grad/global_norm")
    assert history["steps"] == list(range(1, MAX_STEPS + 1))
    with trained.query() as query:
        (event,) = query.storage.get_events(trained.run["run_id"], "gradient_capture")
    assert event["data"]["point"] == CAPTURE_POINT
    assert event["data"]["model"] == "GPT2LMHeadModel"


def test_captured_norm_is_the_clipped_norm_and_hf_grad_norm_the_preclip_one(
    trained: Trained,
) -> None:
    """The captured global norm equals the norm of the gradients the optimizer applies, as a
    callback after Tracer's sees them (clipped), at every step. HF's `grad_norm` (before
    clipping) is stored as the series "grad_norm"; where it exceeds `max_grad_norm` the
    captured norm is `max_grad_norm`, elsewhere the two agree."""
    captured = dict(zip(*trained.history("grad/global_norm").values(), strict=True))
    assert sorted(trained.reference_norms) == list(range(1, MAX_STEPS + 1))
    for step, norm in trained.reference_norms.items():
        assert captured[step] == pytest.approx(norm, rel=1e-5), step

    preclip = trained.logged("grad_norm")
    history = trained.history("grad_norm")
    assert history["steps"] == sorted(preclip)
    assert history["values"] == pytest.approx([preclip[s] for s in history["steps"]])
    clipped = [s for s, norm in preclip.items() if norm > MAX_GRAD_NORM]
    unclipped = [s for s, norm in preclip.items() if norm < MAX_GRAD_NORM]
    assert clipped and unclipped, preclip  # the data exercises both cases
    for step in clipped:
        assert captured[step] == pytest.approx(MAX_GRAD_NORM, rel=1e-5)
        assert not math.isclose(captured[step], preclip[step], rel_tol=1e-3)
    for step in unclipped:
        assert captured[step] == pytest.approx(preclip[step], rel=1e-5)


def test_eval_metrics_stored_at_eval_steps(trained: Trained) -> None:
    """Every number `on_evaluate` reports is a series at the global steps of evaluation."""
    logged = trained.logged("eval_loss")
    assert sorted(logged) == [4, 8, 12]
    for key in ("eval_loss", "eval_runtime", "eval_samples_per_second"):
        values = trained.logged(key)
        history = trained.history(key)
        assert history["steps"] == [4, 8, 12], key
        assert history["values"] == pytest.approx([values[s] for s in (4, 8, 12)])


def test_saves_recorded_and_run_file_written_into_each_checkpoint(trained: Trained) -> None:
    """Each save is an event "model_saved" at its step with the checkpoint's path, and
    `tracer_run.json` in that directory names the run (what a resume reads)."""
    with trained.query() as query:
        saves = query.storage.get_events(trained.run["run_id"], "model_saved")
        last = query.last_healthy_checkpoint(trained.run["run_id"])
    expected = {step: str(trained.output_dir / f"checkpoint-{step}") for step in (4, 8, 12)}
    assert {e["step"]: e["data"]["path"] for e in saves} == expected
    assert last == {"step": 12, "path": expected[12], "pinned_path": None}
    for path in expected.values():
        assert os.path.isdir(path)
        with open(os.path.join(path, RUN_FILE), encoding="utf-8") as handle:
            saved = json.load(handle)
        assert saved["run_id"] == trained.run["run_id"]
        assert saved["run_name"] == trained.run["run_name"]
        assert saved["project"] == PROJECT


def test_end_of_training_totals_are_summary_values_not_series(trained: Trained) -> None:
    """train_runtime, train_loss & co. (logged once at the end) are in the run summary with
    HF's values, and none of them is a metric series."""
    (final,) = [entry for entry in trained.log_history if "train_runtime" in entry]
    with trained.query() as query:
        summary = query.get_run_summary(trained.run["run_id"])
        names = {m["name"] for m in query.storage.list_metrics(trained.run["run_id"])}
    assert set(summary["summary"]) == set(SUMMARY_KEYS)
    for key in SUMMARY_KEYS:
        assert summary["summary"][key] == pytest.approx(final[key]), key
    assert not names & SUMMARY_KEYS
    assert summary["status"] == "finished"


def test_config_holds_training_args_and_model_config(trained: Trained) -> None:
    """The stored config is the TrainingArguments and the model's config, as JSON."""
    config = trained.run["config"]
    args = config["training_args"]
    assert args["gradient_accumulation_steps"] == 4
    assert args["max_grad_norm"] == MAX_GRAD_NORM
    assert args["max_steps"] == MAX_STEPS
    assert args["output_dir"] == str(trained.output_dir)
    model_config = config["model_config"]
    assert model_config["model_type"] == "gpt2"
    assert (model_config["n_layer"], model_config["n_embd"]) == (2, 32)


# -- public entry points --------------------------------------------------------------------
def test_integrations_name_is_the_same_class() -> None:
    """`tracer.integrations.TransformersCallback` is `tracer_hf.TransformersCallback`."""
    from tracer.integrations import TransformersCallback as FromIntegrations

    assert FromIntegrations is TransformersCallback


def test_seed_api_example_runs_as_written(tmp_path: Path) -> None:
    """The SEED-API's HuggingFace example, its lines verbatim, with a tiny model and args.
    The example leaves the data implicit (a Trainer cannot train without a train_dataset),
    so the test sets it on the trainer before `trainer.train()`."""
    model = tiny_model()
    training_args = tiny_training_args(tmp_path / "out", max_steps=4, eval_strategy="no")

    from tracer.integrations import TransformersCallback  # noqa: I001 - as written
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=training_args,
        callbacks=[
            TransformersCallback(
                project="my-project",
                checkpoint_interval=100
            )
        ]
    )  # fmt: skip
    trainer.train_dataset = TokenDataset()
    trainer.train()

    with QueryEngine() as query:
        run = only_run(query.list_runs("my-project"))
        summary = query.get_run_summary(run["run_id"])
        grad_steps = query.get_metric_history(run["run_id"], "grad/global_norm")["steps"]
    assert run["status"] == "finished"
    assert run["total_steps"] == trainer.state.global_step == 4
    assert summary["final_metrics"]["loss"] > 0
    assert grad_steps == [1, 2, 3, 4]


def test_typo_in_a_setting_fails_at_construction() -> None:
    """A misspelled Tracer setting raises ValueError naming the intended one, before any
    Trainer exists; nothing is stored."""
    with pytest.raises(ValueError, match="checkpoint_interval"):
        TransformersCallback(project="my-project", checkpoint_intervall=100)
    with pytest.raises(ValueError):
        TransformersCallback(project="my-project", checkpoint_interval=0)
    assert not os.path.exists(".tracer")


def test_trainer_without_tracer_is_untouched(tmp_path: Path) -> None:
    """Sanity of the harness: the same Trainer with no Tracer callback trains and stores
    nothing, so everything above is the callback's doing."""
    trainer: Trainer = make_trainer(tmp_path / "out", [], max_steps=2, eval_strategy="no")
    trainer.train()
    assert trainer.state.global_step == 2
    assert not os.path.exists(".tracer")


def test_last_step_is_captured_when_nothing_is_logged_at_it(tmp_path: Path) -> None:
    """Regression: with 5 steps and logging every 2, the last step has no metric of its own;
    its gradient capture is still stored (it used to be dropped at finish), total_steps 5."""
    trainer = make_trainer(
        tmp_path / "out", [tracer_callback()], max_steps=5, eval_strategy="no", save_strategy="no"
    )
    trainer.train()
    with QueryEngine() as query:
        run = only_run(query.list_runs(PROJECT))
        assert query.get_metric_history(run["run_id"], "loss")["steps"] == [2, 4]
        grad_steps = query.get_metric_history(run["run_id"], "grad/global_norm")["steps"]
        checkpoints = query.storage.get_checkpoints(run["run_id"])
    assert grad_steps == [1, 2, 3, 4, 5]
    assert run["total_steps"] == trainer.state.global_step == 5
    assert [(c["step"], c["reason"]) for c in checkpoints] == [(5, "finish")]
