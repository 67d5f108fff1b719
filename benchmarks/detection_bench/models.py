"""Synthetic tasks and small models for the detection benchmark, built from code.

Every task is a fixed in-memory data set drawn from a seeded generator; training samples
random minibatches from it, so the per-batch loss is as noisy as in real training. Use
`make_task(model_kind, seed)` and `make_model(model_kind, seed)` with one of `MODEL_KINDS`:

- `mlp_cls`: 10 Gaussian clusters in 16 dimensions (10% of labels random), an MLP
  16-64-64-10 (ReLU), cross entropy.
- `regression`: a random 2-layer tanh teacher plus label noise (std 0.3), an MLP 16-64-64-1.
- `cnn`: 1x12x12 images, 4 classes (a fixed +-1 pattern per class plus noise), 2 convolutions.
- `transformer`: sequences of 8 tokens (vocabulary 10), predict the largest token (10% of
  labels random); a
  2-layer `nn.TransformerEncoder` (d_model 32), mean-pooled.
- `deep_sigmoid`, `deep_tanh` (+ `_tiny`: weights drawn with std 0.02): 20 Linear 16-16
  layers with that activation on the clusters task, for vanishing gradients.
- `mlp_cls_dead_head`, `regression_dead_head`: the MLP plus a head `aux` whose output is
  multiplied by 0 (a wiring bug: watched, but its gradient is exactly zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

FEATURES = 16
CLASSES = 10
IMAGE = 12
IMAGE_CLASSES = 4
SEQUENCE = 8
VOCABULARY = 10
DEEP_LAYERS = 20
LABEL_NOISE = 0.1

TASK_OF = {
    "mlp_cls": "clusters",
    "mlp_cls_dead_head": "clusters",
    "regression": "teacher",
    "regression_dead_head": "teacher",
    "cnn": "images",
    "transformer": "sequences",
    "deep_sigmoid": "clusters",
    "deep_tanh": "clusters",
    "deep_sigmoid_tiny": "clusters",
    "deep_tanh_tiny": "clusters",
}
MODEL_KINDS = tuple(TASK_OF)


@dataclass(frozen=True)
class Task:
    """A data set: `inputs[i]` and `targets[i]`; class indices when `classes` > 0, else
    regression targets of shape (n, 1)."""

    name: str
    inputs: torch.Tensor
    targets: torch.Tensor
    classes: int

    @property
    def classification(self) -> bool:
        return self.classes > 0

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return nn.functional.cross_entropy(output, targets)
        return nn.functional.mse_loss(output, targets)

    def accuracy(self, output: torch.Tensor, targets: torch.Tensor) -> float:
        """Classification accuracy of a batch; 0.0 for regression (not logged then)."""
        if not self.classification:
            return 0.0
        return float((output.argmax(dim=1) == targets).float().mean())


def _noisy(labels: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """`labels` with LABEL_NOISE of them replaced by random classes: an irreducible loss, as
    in real data (a task learnt to a loss of 0.001 has unrealistically heavy-tailed noise)."""
    flip = torch.rand(labels.shape, generator=generator) < LABEL_NOISE
    random = torch.randint(0, classes, labels.shape, generator=generator)
    return torch.where(flip, random, labels)


def make_task(model_kind: str, seed: int) -> Task:
    """The data set that `model_kind` learns, drawn from `seed`."""
    name = TASK_OF[model_kind]
    generator = torch.Generator().manual_seed(1000 + seed)
    if name == "clusters":
        centers = 1.2 * torch.randn(CLASSES, FEATURES, generator=generator)
        labels = torch.randint(0, CLASSES, (4096,), generator=generator)
        inputs = centers[labels] + torch.randn(4096, FEATURES, generator=generator)
        return Task(name, inputs, _noisy(labels, CLASSES, generator), CLASSES)
    if name == "teacher":
        inputs = torch.randn(4096, FEATURES, generator=generator)
        w1 = torch.randn(FEATURES, 32, generator=generator) / math.sqrt(FEATURES)
        w2 = torch.randn(32, 1, generator=generator) / math.sqrt(32)
        clean = torch.tanh(inputs @ w1) @ w2 * 2.0
        return Task(name, inputs, clean + 0.3 * torch.randn(4096, 1, generator=generator), 0)
    if name == "images":
        patterns = torch.randint(0, 2, (IMAGE_CLASSES, IMAGE * IMAGE), generator=generator)
        patterns = (2.0 * patterns.float() - 1.0).view(IMAGE_CLASSES, 1, IMAGE, IMAGE)
        labels = torch.randint(0, IMAGE_CLASSES, (2048,), generator=generator)
        noise = 1.5 * torch.randn(2048, 1, IMAGE, IMAGE, generator=generator)
        return Task(name, 0.5 * patterns[labels] + noise, labels, IMAGE_CLASSES)
    if name == "sequences":
        tokens = torch.randint(0, VOCABULARY, (4096, SEQUENCE), generator=generator)
        labels = _noisy(tokens.max(dim=1).values, VOCABULARY, generator)
        return Task(name, tokens, labels, VOCABULARY)
    raise ValueError(f"unknown task {name!r}")


class DeadHead(nn.Module):
    """A body plus a head `aux` whose output is multiplied by 0."""

    def __init__(self, body: nn.Module, outputs: int) -> None:
        super().__init__()
        self.body = body
        self.aux = nn.Linear(FEATURES, outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.body(inputs) + 0.0 * self.aux(inputs)
        return output


class TinyTransformer(nn.Module):
    """Token and position embeddings, a 2-layer encoder, mean pooling, a linear classifier."""

    def __init__(self, d_model: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(SEQUENCE, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, VOCABULARY)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens) + self.position)
        output: torch.Tensor = self.head(hidden.mean(dim=1))
        return output


def _mlp(outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, outputs)
    )


def _deep(activation: type[nn.Module], tiny: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(DEEP_LAYERS - 1):
        linear = nn.Linear(FEATURES, FEATURES)
        if tiny:
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        layers += [linear, activation()]
    layers.append(nn.Linear(FEATURES, CLASSES))
    return nn.Sequential(*layers)


def make_model(model_kind: str, seed: int) -> nn.Module:
    """A freshly initialised model of `model_kind` (weights drawn from `seed`)."""
    torch.manual_seed(seed)
    if model_kind == "mlp_cls":
        return _mlp(CLASSES)
    if model_kind == "regression":
        return _mlp(1)
    if model_kind == "mlp_cls_dead_head":
        return DeadHead(_mlp(CLASSES), CLASSES)
    if model_kind == "regression_dead_head":
        return DeadHead(_mlp(1), 1)
    if model_kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
            nn.Linear(16 * 9, IMAGE_CLASSES),
        )
    if model_kind == "transformer":
        return TinyTransformer()
    if model_kind.startswith("deep_"):
        activation = nn.Sigmoid if "sigmoid" in model_kind else nn.Tanh
        return _deep(activation, tiny=model_kind.endswith("_tiny"))
    raise ValueError(f"unknown model kind {model_kind!r}")
