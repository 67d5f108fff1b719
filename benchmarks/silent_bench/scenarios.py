"""The silent-bug catalogue: each bug scenario (run beside its clean twin: the same scenario
with `bug=""`, sharing its seed) and the extra clean runs.

Scenarios alternate "tune" / "held" in declaration order; a bug class declared twice (on two
models) lands once in each half. Tune detectors on the "tune" half and read the "held" half
as the honest figure. `onset` is the first step the bug acts at: 0 for bugs in the setup,
the first evaluation (during step `EPOCH` - 1) for bugs in the evaluation code, and the
first training step after it (`EPOCH`) for a model left in eval() mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

EPOCH = 50  # steps per epoch: an evaluation pass ends each
WINDOW = 50  # a bug counts as caught by a report starting within this many steps of onset

BUG_CLASSES = {
    "no_zero_grad": "gradients never zeroed",
    "accumulate_undivided": "accumulation without dividing the loss",
    "frozen_by_filter": "layers frozen by mistake (only norms train)",
    "head_not_in_optimizer": "head left out of the optimizer",
    "optimizer_other_copy": "optimizer built for another copy of the model",
    "lr_too_small": "learning rate 100x too small",
    "scheduler_never_stepped": "warmup scheduler never stepped (lr stays 0)",
    "scheduler_per_batch": "epoch scheduler stepped per batch",
    "eval_mode_training": "model left in eval() after validation",
    "train_mode_eval": "validation run in train() mode",
    "dropout_ignores_flag": "F.dropout without training=self.training",
    "shuffled_labels": "labels shuffled apart from their inputs",
    "mse_broadcast": "MSE of [B, 1] against [B] (broadcasts)",
    "repeated_batch": "a loader that repeats one batch",
    "scaler_skips": "GradScaler skips every step (inf each time)",
    "decay_on_norms": "weight decay on norms and biases",
    "bad_init": "init scale 30x too large",
}


@dataclass(frozen=True)
class Scenario:
    """One training: `bug` (a key of BUG_CLASSES, "" for a clean run) in a loop of `steps`
    optimizer steps. `setup` names the clean runs' special shapes: "frozen_backbone",
    "finetune" (a pretrained MLP fine-tuned at a small lr on a new task), "peft" (rank-4
    adapters on a frozen pretrained MLP), "amp" (a GradScaler that never skips)."""

    name: str
    bug: str = ""
    model: str = "mlp"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 32
    steps: int = 300
    seed: int = 0
    schedule: str = ""  # "", "warmup" (from 0, per step), "epoch_step" (StepLR per epoch)
    accumulation: int = 1
    weight_decay: float = 0.0
    data: str = "index"  # "index" (random rows), "loader" (a DataLoader in order), "full"
    zero_grad: str = "after_step"  # or "before_backward", "to_zeros" (set_to_none=False)
    setup: str = ""
    onset: int = 0
    split: str = ""
    twin_of: str = ""  # a twin: the bug scenario it is the clean copy of

    def twin(self) -> Scenario:
        return dataclasses.replace(self, name=self.name + "~twin", bug="", twin_of=self.name)

    def replace(self, **changes: object) -> Scenario:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def bugs() -> list[Scenario]:
    """The bug scenarios, splits not yet assigned (pairs of one class are adjacent)."""
    return [
        Scenario("no_zero_grad_mlp", "no_zero_grad"),
        Scenario(
            "no_zero_grad_regression_sgdm",
            "no_zero_grad",
            model="regression",
            optimizer="sgd_momentum",
            lr=0.01,
        ),
        Scenario("frozen_by_filter_cnn", "frozen_by_filter", model="bn_cnn", lr=2e-3),
        Scenario(
            "frozen_by_filter_transformer",
            "frozen_by_filter",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
        ),
        Scenario("head_not_in_optimizer_mlp", "head_not_in_optimizer"),
        Scenario(
            "head_not_in_optimizer_cnn",
            "head_not_in_optimizer",
            model="bn_cnn",
            optimizer="sgd_momentum",
            lr=0.02,
        ),
        Scenario("optimizer_other_copy_mlp", "optimizer_other_copy"),
        Scenario(
            "optimizer_other_copy_transformer",
            "optimizer_other_copy",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
        ),
        Scenario("eval_mode_training_mlp", "eval_mode_training", onset=EPOCH),
        Scenario(
            "eval_mode_training_cnn",
            "eval_mode_training",
            model="bn_cnn",
            optimizer="sgd_momentum",
            lr=0.02,
            onset=EPOCH,
        ),
        Scenario("repeated_batch_mlp", "repeated_batch", data="loader"),
        Scenario(
            "repeated_batch_transformer",
            "repeated_batch",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            data="loader",
        ),
        Scenario(
            "scheduler_never_stepped_transformer",
            "scheduler_never_stepped",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            schedule="warmup",
        ),
        Scenario(
            "scheduler_per_batch_mlp",
            "scheduler_per_batch",
            optimizer="sgd_momentum",
            lr=0.05,
            schedule="epoch_step",
        ),
        Scenario("scaler_skips_mlp", "scaler_skips", setup="amp"),
        Scenario(
            "scaler_skips_regression",
            "scaler_skips",
            model="regression",
            optimizer="sgd_momentum",
            lr=0.01,
            setup="amp",
        ),
        Scenario(
            "accumulate_undivided_mlp_sgd",
            "accumulate_undivided",
            optimizer="sgd",
            lr=0.05,
            accumulation=4,
        ),
        Scenario("lr_too_small_mlp", "lr_too_small"),
        Scenario(
            "train_mode_eval_cnn",
            "train_mode_eval",
            model="bn_cnn",
            optimizer="sgd_momentum",
            lr=0.02,
            onset=EPOCH - 1,
        ),
        Scenario("dropout_ignores_flag_mlp", "dropout_ignores_flag", onset=EPOCH - 1),
        Scenario("shuffled_labels_mlp", "shuffled_labels"),
        Scenario("mse_broadcast_regression", "mse_broadcast", model="regression"),
        Scenario(
            "decay_on_norms_transformer",
            "decay_on_norms",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.1,
        ),
        Scenario("bad_init_mlp", "bad_init"),
    ]


def clean() -> list[Scenario]:
    """Extra clean runs (each at two seeds): every one of them reporting anything is a false
    alarm."""
    runs = [
        Scenario("clean_bn_cnn", model="bn_cnn", optimizer="sgd_momentum", lr=0.02),
        Scenario(
            "clean_transformer_warmup",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            schedule="warmup",
            weight_decay=0.1,
        ),
        Scenario("clean_frozen_backbone", model="bn_cnn", lr=2e-3, setup="frozen_backbone"),
        Scenario("clean_finetune_small_lr", lr=3e-5, setup="finetune"),
        Scenario("clean_peft", model="lora_mlp", lr=2e-3, setup="peft"),
        Scenario("clean_amp_mlp", setup="amp"),
        # loops that bend the usual order: the whole dataset at each step (a DataLoader of
        # batches beside it), zero_grad between forward and backward, accumulation with
        # gradients zeroed in place
        Scenario("clean_full_batch_regression", model="regression", data="full", lr=0.01),
        Scenario(
            "clean_loader_accumulate_transformer",
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            data="loader",
            accumulation=2,
            zero_grad="to_zeros",
        ),
        Scenario(
            "clean_zero_grad_first_cnn",
            model="bn_cnn",
            optimizer="sgd_momentum",
            lr=0.02,
            zero_grad="before_backward",
        ),
    ]
    return [run.replace(name=f"{run.name}_s{seed}", seed=seed) for run in runs for seed in (1, 2)]


def catalogue() -> tuple[list[Scenario], list[Scenario]]:
    """(bug scenarios, clean scenarios), splits assigned alternately in declaration order
    (a clean run's two seeds land one in each half)."""
    bug_runs = [s.replace(split="tune" if i % 2 == 0 else "held") for i, s in enumerate(bugs())]
    clean_runs = [s.replace(split="tune" if i % 2 == 0 else "held") for i, s in enumerate(clean())]
    names = [s.name for s in bug_runs + clean_runs]
    assert len(names) == len(set(names)), "scenario names must be unique"
    return bug_runs, clean_runs
