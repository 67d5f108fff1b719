"""Silent bugs in real small trainings (CPU, real SQLite store): each class Tracer detects is
reported, with the layer or group named, online and offline alike; the healthy runs of the
issue (BatchNorm with conv biases, LayerNorm transformer, a frozen backbone under a trainable
head, small-lr fine-tuning, adapters on a frozen model) report nothing."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.config import TracerConfig
from tracer.storage import StorageBackend

pytest.importorskip("torch")  # core-notorch runs tests/core without it

import torch
from torch import nn
from torch.nn import functional

SHOWN = ("warning", "critical")


class Net(nn.Module):
    def __init__(self, norm: str = "", dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.norm = nn.LayerNorm(32) if norm == "layer" else nn.BatchNorm1d(32)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(32, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.drop(torch.relu(self.norm(self.fc1(inputs))))
        output: torch.Tensor = self.head(hidden)
        return output


class Lora(nn.Module):
    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(0.01 * torch.randn(4, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, 4))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(inputs) + inputs @ self.lora_a.T @ self.lora_b.T
        return out


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(3, 8, generator=generator)
    labels = torch.randint(0, 3, (512,), generator=generator)
    return centers[labels] + torch.randn(512, 8, generator=generator), labels


def train(
    tmp_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int = 80,
    zero_grad: str = "after_step",
    batches: str = "random",
    accumulation: int = 1,
    evaluate: Optional[Callable[[nn.Module, int], None]] = None,
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    scheduler: Any = None,
    scaler: Any = None,
    **config: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train under a run of its own; (online, offline) shown anomalies. `zero_grad`:
    "after_step", "before_backward" (after the forward), "to_zeros" (set_to_none=False) or
    "never". `batches`: "random" (indexed), "loader" (a DataLoader iterated), "restarted"
    (next(iter(loader)) at each step: its first batch every time) or "full" (the whole
    dataset at each step)."""
    torch.manual_seed(0)
    inputs, labels = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, labels), batch_size=32, shuffle=batches == "loader"
    )
    stream = iter(loader)
    path = str(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        run = tracer.init(project="silent", storage_path=path, **config)
        tracer.watch(model, optimizer=optimizer)
        model.train()
        generator = torch.Generator().manual_seed(1)
        for step in range(steps):
            for _ in range(accumulation):
                if batches == "restarted":
                    x, y = next(iter(loader))
                elif batches == "loader":
                    batch = next(stream, None)
                    if batch is None:
                        stream = iter(loader)
                        batch = next(stream)
                    x, y = batch
                elif batches == "full":
                    x, y = inputs, labels
                else:
                    index = torch.randint(0, 512, (32,), generator=generator)
                    x, y = inputs[index], labels[index]
                output = model(x)
                loss = (loss_fn or functional.cross_entropy)(output, y) / accumulation
                if zero_grad == "before_backward":
                    optimizer.zero_grad()
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if zero_grad in ("after_step", "to_zeros"):
                optimizer.zero_grad(set_to_none=zero_grad == "after_step")
            if scheduler is not None:
                scheduler.step()
            if evaluate is not None:
                evaluate(model, step)
            tracer.log({"loss": loss.detach()})
            tracer.step()
        tracer.finish()
    with QueryEngine(storage_path=path) as query:
        online = [dict(a) for a in query.get_anomalies(run.run_id)]
    store = StorageBackend(TracerConfig(project_name="silent", storage_path=path))  # type: ignore[abstract]
    try:
        offline = [dict(a) for a in AnomalyDetector(store).detect_all_anomalies(run.run_id)]
    finally:
        store.close()
    return [a for a in online if a["severity"] in SHOWN], [
        a for a in offline if a["severity"] in SHOWN
    ]


def only(found: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [a for a in found if a["anomaly_type"] == kind]
    assert matches, f"no {kind} in {[(a['anomaly_type'], a['step']) for a in found]}"
    return matches[0]


def keys(found: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    return {(a["anomaly_type"], int(a["step"]), a["subject"]) for a in found}


def validate(model: nn.Module, step: int) -> None:
    """An evaluation pass every 40 steps, as it should be written."""
    if step % 40 == 39:
        model.eval()
        with torch.no_grad():
            model(data(2)[0][:64])
        model.train()


def adam(model: nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def test_gradients_never_zeroed(tmp_path: Path) -> None:
    model = Net()
    online, offline = train(tmp_path, model, adam(model), zero_grad="never")
    found = only(online, "gradients_not_reset")
    assert found["severity"] == "critical" and "zero_grad" in found["hint"]
    # reset checked after the steps sampled at 0 and 10, read at the samples 10 and 20
    assert found["step"] == 20 and keys(online) == keys(offline)


def test_head_left_out_of_the_optimizer_is_named(tmp_path: Path) -> None:
    model = Net()
    body = [p for n, p in model.named_parameters() if not n.startswith("head")]
    online, offline = train(tmp_path, model, torch.optim.Adam(body, lr=1e-2))
    found = only(online, "parameters_outside_optimizer")
    # at the second sample (update_check_interval=10): the head has not moved since the first
    assert found["step"] == 10 and found["severity"] == "warning"
    assert "`head.weight`" in found["message"] and keys(online) == keys(offline)


def test_optimizer_of_another_copy_is_critical(tmp_path: Path) -> None:
    model = Net()
    online, _ = train(tmp_path, model, adam(copy.deepcopy(model)))
    assert only(online, "parameters_outside_optimizer")["severity"] == "critical"


def test_parameters_another_optimizer_trains_are_not_outside(tmp_path: Path) -> None:
    """A GAN watched as one module with the generator's optimizer: the discriminator's
    parameters get gradients and are in no group of that optimizer, but its own optimizer
    moves them, so nothing is left out."""
    torch.manual_seed(0)
    gan = nn.ModuleDict(
        {"g": nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4)),
         "d": nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))}
    )  # fmt: skip
    g_opt = torch.optim.Adam(gan["g"].parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(gan["d"].parameters(), lr=1e-3)
    run = tracer.init(project="silent", storage_path=str(tmp_path))
    tracer.watch(gan, optimizer=g_opt)
    softplus = nn.functional.softplus
    for _ in range(60):
        fake = gan["g"](torch.randn(32, 4))
        d_loss = softplus(-gan["d"](torch.randn(32, 4) + 2)).mean()
        d_loss = d_loss + softplus(gan["d"](fake.detach())).mean()
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss = softplus(-gan["d"](fake)).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        tracer.log({"d_loss": d_loss.item(), "g_loss": g_loss.item()})
        tracer.step()
    tracer.finish()
    with QueryEngine(str(tmp_path)) as query:
        kinds = {a["anomaly_type"] for a in query.get_anomalies(run.run_id)}
    assert "parameters_outside_optimizer" not in kinds


def test_layers_frozen_by_a_name_filter(tmp_path: Path) -> None:
    model = Net()
    for name, param in model.named_parameters():
        param.requires_grad = "norm" in name  # meant: "norm" in name or "head" in name
    online, _ = train(tmp_path, model, adam(model), steps=20)
    assert only(online, "frozen_model")["severity"] == "critical"


def test_warmup_scheduler_never_stepped_leaves_the_lr_at_zero(tmp_path: Path) -> None:
    model = Net(norm="layer")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / 30))  # never stepped
    online, offline = train(tmp_path, model, optimizer)
    found = only(online, "parameters_not_updated")
    assert found["severity"] == "critical" and found["step"] == 20
    assert "lr: 0" in found["message"] and keys(online) == keys(offline)


def test_an_epoch_scheduler_stepped_per_batch_decays_the_lr_to_nothing(tmp_path: Path) -> None:
    """StepLR(step_size=2, gamma=0.1) meant per epoch, stepped per batch: the lr is 1e-12 by
    step 20, and the model stops changing."""
    model = Net(norm="layer")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    online, offline = train(tmp_path, model, optimizer, scheduler=scheduler)
    found = only(online, "parameters_not_updated")
    assert found["severity"] == "critical" and found["step"] <= 50
    assert keys(online) == keys(offline)


def test_gradscaler_skipping_every_step(tmp_path: Path) -> None:
    model = Net()
    model.head.weight.register_hook(lambda grad: grad * math.inf)  # fp16 overflow, forced
    scaler = torch.amp.GradScaler("cpu")
    online, _ = train(tmp_path, model, adam(model), scaler=scaler, steps=40)
    found = only(online, "skipped_steps")
    assert found["severity"] == "critical" and found["step"] == 0


def test_model_left_in_eval_mode_after_validation(tmp_path: Path) -> None:
    def validate(model: nn.Module, step: int) -> None:
        if step == 19:
            model.eval()  # ... and no model.train() after

    model = Net()
    online, _ = train(tmp_path, model, adam(model), evaluate=validate, steps=60)
    assert only(online, "eval_mode_training")["step"] <= 40


def test_validation_in_train_mode(tmp_path: Path) -> None:
    inputs, _ = data(1)

    def validate(model: nn.Module, step: int) -> None:
        if step % 20 == 19:
            with torch.no_grad():  # model.eval() forgotten
                model(inputs[:64])

    model = Net()
    online, _ = train(tmp_path, model, adam(model), evaluate=validate, steps=40)
    assert only(online, "evaluation_in_train_mode")["step"] == 19


def test_a_loader_restarted_at_each_step_repeats_its_first_batch(tmp_path: Path) -> None:
    model = Net()
    online, offline = train(tmp_path, model, adam(model), batches="restarted", steps=40)
    found = only(online, "repeated_batch")
    assert found["step"] == 20 and "16 batches" in found["message"]
    assert keys(online) == keys(offline)


def test_an_evaluation_that_raises_ends_the_dropout_watch(tmp_path: Path) -> None:
    """The function mode held over a watched evaluation forward is gone after the forward,
    also when it raised, and its one-shot hook with it."""
    from torch.overrides import _get_current_function_mode_stack

    modes_seen = []

    class Failing(Net):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if not self.training:
                modes_seen.append(len(_get_current_function_mode_stack()))
                raise RuntimeError("broken evaluation")
            return super().forward(inputs)

    model = Failing()
    optimizer = adam(model)
    tracer.init(project="silent", storage_path=str(tmp_path))
    tracer.watch(model, optimizer=optimizer)
    inputs, labels = data()
    functional.cross_entropy(model(inputs[:32]), labels[:32]).backward()
    optimizer.step()
    tracer.step()
    model.eval()
    hooks = dict(model._forward_hooks)
    with torch.no_grad(), pytest.raises(RuntimeError, match="broken evaluation"):
        model(inputs[:32])
    assert modes_seen == [1]  # the watch was on during the forward
    assert _get_current_function_mode_stack() == [] and dict(model._forward_hooks) == hooks
    tracer.finish()


def test_a_functional_dropout_left_on_in_eval(tmp_path: Path) -> None:
    class FunctionalDropout(Net):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            hidden = functional.dropout(torch.relu(self.norm(self.fc1(inputs))), 0.2)
            output: torch.Tensor = self.head(hidden)
            return output

    model = FunctionalDropout()
    online, offline = train(tmp_path, model, adam(model), evaluate=validate, steps=50)
    found = only(online, "dropout_in_eval")
    assert found["step"] == 39 and "training=self.training" in found["hint"]
    assert keys(online) == keys(offline)


def test_a_broadcasting_mse_is_reported_from_torch_warning(tmp_path: Path) -> None:
    model = Net()

    def mse(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return functional.mse_loss(output[:, :1], labels.float())  # [B, 1] against [B]

    online, offline = train(tmp_path, model, adam(model), loss_fn=mse, steps=10)
    found = only(online, "training_warning")
    assert found["subject"] == "loss_broadcast" and "target" in found["hint"]
    assert keys(online) == keys(offline)


def test_an_init_scale_far_off(tmp_path: Path) -> None:
    model = Net()
    with torch.no_grad():
        model.fc1.weight.mul_(30.0)
    online, _ = train(tmp_path, model, adam(model), steps=10)
    assert "fc1.weight" in only(online, "weight_scale")["message"]


def test_weight_decay_on_norms(tmp_path: Path) -> None:
    model = Net(norm="layer")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    online, _ = train(tmp_path, model, optimizer, steps=10)
    assert only(online, "norm_weight_decay")["step"] == 0


def healthy_batchnorm() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net(norm="batch")  # fc1's bias feeds a BatchNorm: its gradient is ~0
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def healthy_layernorm_decay_apart() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net(norm="layer")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)


def healthy_frozen_backbone() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net()
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("head")
    return model, adam(model)


def healthy_small_lr_finetuning() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net(norm="layer")
    inputs, labels = data(5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):  # "pretraining"
        functional.cross_entropy(model(inputs[:64]), labels[:64]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, torch.optim.Adam(model.parameters(), lr=2e-5)


def healthy_adapters() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net(norm="layer")
    model.requires_grad_(False)
    model.fc1 = Lora(model.fc1)  # type: ignore[assignment]
    return model, adam(model, 1e-3)


@pytest.mark.parametrize(
    "make",
    [
        healthy_batchnorm,
        healthy_layernorm_decay_apart,
        healthy_frozen_backbone,
        healthy_small_lr_finetuning,
        healthy_adapters,
    ],
)
def test_healthy_runs_report_nothing(tmp_path: Path, make: Callable[[], Any]) -> None:
    torch.manual_seed(0)  # the init must not depend on the tests run before
    model, optimizer = make()
    online, offline = train(tmp_path, model, optimizer, evaluate=validate, steps=120)
    assert online == [] and offline == []


@pytest.mark.parametrize(
    "loop",
    [
        {"zero_grad": "before_backward"},  # zero_grad between the forward and the backward
        {"zero_grad": "to_zeros"},  # zero_grad(set_to_none=False)
        {"accumulation": 4},  # gradient accumulation, reset after each optimizer step
        {"batches": "loader"},  # a DataLoader iterated as it should be
        {"batches": "full"},  # full-batch training (a DataLoader of batches exists beside)
    ],
    ids=lambda loop: "-".join(f"{k}={v}" for k, v in loop.items()),
)
def test_healthy_loops_report_nothing(tmp_path: Path, loop: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = Net()
    online, offline = train(tmp_path, model, adam(model), evaluate=validate, steps=60, **loop)
    assert online == [] and offline == []


def test_a_sparse_gradient_stops_tracers_capture_not_the_training(tmp_path: Path) -> None:
    """nn.Embedding(sparse=True): its sparse gradient has no norm kernel, so the capture fails
    in the optimizer's pre-hook and stops. Its hooks come off at the step's end, not inside
    torch's loop over them (which raised "OrderedDict mutated during iteration" into
    optimizer.step()); the reset check watching that embedding stops too; training goes on."""

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4, sparse=True)
            self.head = nn.Linear(4, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.embed(tokens).mean(dim=1))
            return out

    model = Bag()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tracer.init(project="silent", storage_path=str(tmp_path))
    tracer.watch(model, optimizer=optimizer)
    for _ in range(30):
        tokens = torch.randint(0, 10, (8, 5))
        functional.cross_entropy(model(tokens), torch.randint(0, 3, (8,))).backward()
        optimizer.step()
        optimizer.zero_grad()
        tracer.step()
    tracer.finish()
    with QueryEngine(storage_path=str(tmp_path)) as query:
        found = [a["anomaly_type"] for a in query.get_anomalies(run.run_id)]
        assert query.get_run_summary(run.run_id)["total_steps"] == 30
    assert "gradients_not_reset" not in found
