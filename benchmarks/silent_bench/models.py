"""Tasks and small models for the silent-bug benchmark, built from code.

The tasks are the detection benchmark's (`detection_bench.models.make_task`): Gaussian
clusters (classification), a random tanh teacher (regression), noisy +-1 images, token
sequences. The models have named parts, so that a bug written as a name filter reads as it
would in a user's script:

- `mlp`: `body` (Linear 16-64, ReLU, Dropout 0.1, Linear 64-64, ReLU) and `head`; with
  `functional_dropout` the dropout is `F.dropout(h, p, training=...)` in `forward`, and the
  bug `dropout_ignores_flag` leaves `training=` out.
- `regression`: the same MLP with one output and no dropout.
- `bn_cnn`: `conv1` (bias) -> `bn1` -> ReLU -> `conv2` (bias) -> `bn2` -> ReLU -> pool ->
  `head`: convolution biases that feed a BatchNorm (their gradient is ~0 by construction).
- `transformer`: the detection benchmark's 2-layer encoder (LayerNorm `norm1`/`norm2`).
- `lora_mlp`: an `mlp` whose Linear layers carry rank-4 adapters (`lora_a`, `lora_b`, B
  initialised to zero), the base frozen: parameter-efficient tuning.
"""

from __future__ import annotations

from typing import Optional

import torch
from detection_bench.models import (
    CLASSES,
    FEATURES,
    IMAGE_CLASSES,
    Task,
    TinyTransformer,
    make_task,
)
from torch import nn
from torch.nn import functional

TASK_OF = {
    "mlp": "mlp_cls",
    "lora_mlp": "mlp_cls",
    "regression": "regression",
    "bn_cnn": "cnn",
    "transformer": "transformer",
}


def task_for(model: str, seed: int) -> Task:
    return make_task(TASK_OF[model], seed)


class Mlp(nn.Module):
    def __init__(self, outputs: int, dropout: float, functional_dropout: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, 64)
        self.fc2 = nn.Linear(64, 64)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(64, outputs)
        self.dropout = dropout
        self.functional_dropout = functional_dropout
        self.ignore_training_flag = False  # the bug: F.dropout(h, p) without training=

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc1(inputs))
        if not self.functional_dropout:
            hidden = self.drop(hidden)
        elif self.ignore_training_flag:
            hidden = functional.dropout(hidden, self.dropout)
        else:
            hidden = functional.dropout(hidden, self.dropout, training=self.training)
        output: torch.Tensor = self.head(torch.relu(self.fc2(hidden)))
        return output


class BnCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Linear(16 * 9, IMAGE_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.bn1(self.conv1(images)))
        hidden = torch.relu(self.bn2(self.conv2(hidden)))
        output: torch.Tensor = self.head(self.pool(hidden).flatten(1))
        return output


class LoraLinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update B @ A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int = 4) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(0.01 * torch.randn(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.base(inputs) + inputs @ self.lora_a.T @ self.lora_b.T
        return output


def make_model(
    kind: str, seed: int, *, functional_dropout: bool = False, base: Optional[nn.Module] = None
) -> nn.Module:
    """A freshly initialised model of `kind` (weights drawn from `seed`). `lora_mlp` wraps
    `base` (an `mlp`, trained before) when given."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return Mlp(CLASSES, 0.1, functional_dropout)
    if kind == "regression":
        return Mlp(1, 0.0, False)
    if kind == "bn_cnn":
        return BnCnn()
    if kind == "transformer":
        return TinyTransformer()
    if kind == "lora_mlp":
        model = base if base is not None else Mlp(CLASSES, 0.1, False)
        assert isinstance(model, Mlp)
        model.requires_grad_(False)
        model.fc1 = LoraLinear(model.fc1)  # type: ignore[assignment]
        model.fc2 = LoraLinear(model.fc2)  # type: ignore[assignment]
        return model
    raise ValueError(f"unknown model kind {kind!r}")
