"""One training loop with every bug of the catalogue as a switch, run under Tracer.

The loop is an ordinary user's: sample a batch, forward, loss, backward, optimizer step,
`zero_grad`, `tracer.log` + `tracer.step()` once per optimizer step, an evaluation pass
under `torch.no_grad()` at the end of each epoch (`EPOCH` steps). A bug changes only its
own lines (`if bug == ...`); its twin runs the same code with `bug=""`. CPU, one torch
thread, seeded. Tracer runs as a new user gets it: `tracer.init(...)` with the defaults
(plus any `extra` config) and `tracer.watch(model, optimizer=optimizer)`.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from detection_bench.models import Task
from detection_bench.training import online_and_offline
from torch import nn
from torch.nn import functional

import tracer

from .models import Mlp, make_model, task_for
from .scenarios import EPOCH, Scenario

PROJECT = "bench-silent"
WARMUP = 30
PRETRAIN_STEPS = 300


@dataclass
class RunResult:
    scenario: str
    run_id: str = ""
    seconds: float = 0.0
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    online: list[dict[str, Any]] = field(default_factory=list)
    offline: list[dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None


def make_optimizer(
    kind: str, params: Any, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}")


def _pretrained(scenario: Scenario) -> nn.Module:
    """An MLP trained on the clusters task of the scenario's seed (no Tracer): the model a
    fine-tuning starts from."""
    model = make_model("mlp", scenario.seed)
    task = task_for("mlp", scenario.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(scenario.seed)
    for _ in range(PRETRAIN_STEPS):
        index = torch.randint(0, task.inputs.shape[0], (32,), generator=batches)
        functional.cross_entropy(model(task.inputs[index]), task.targets[index]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def build(scenario: Scenario) -> tuple[nn.Module, Task, torch.optim.Optimizer]:
    """The model, its task and its optimizer, with the setup-time bugs applied."""
    bug = scenario.bug
    if scenario.setup in ("finetune", "peft"):
        base = _pretrained(scenario)
        task = task_for("mlp", scenario.seed + 100)  # a new task: new clusters
        torch.manual_seed(scenario.seed + 100)
        assert isinstance(base, Mlp)
        base.head.reset_parameters()
        model = (
            make_model("lora_mlp", scenario.seed, base=base) if scenario.setup == "peft" else base
        )
    else:
        functional_dropout = "dropout_ignores_flag" in (bug, scenario.twin_of[:20])
        model = make_model(scenario.model, scenario.seed, functional_dropout=functional_dropout)
        task = task_for(scenario.model, scenario.seed)
        if bug == "dropout_ignores_flag":
            model.ignore_training_flag = True  # type: ignore[assignment]
    if bug == "bad_init":
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.weight.mul_(30.0)
    if scenario.setup == "frozen_backbone":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("head")
    if bug == "frozen_by_filter":  # meant: freeze the backbone; the filter keeps only norms
        keep = "bn" if scenario.model == "bn_cnn" else "norm"
        for name, param in model.named_parameters():
            param.requires_grad = keep in name
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = scenario.lr / 100 if bug == "lr_too_small" else scenario.lr
    if bug == "head_not_in_optimizer":
        params: Any = [p for n, p in model.named_parameters() if not n.startswith("head")]
    elif bug == "optimizer_other_copy":
        params = list(copy.deepcopy(model).parameters())
    elif scenario.weight_decay and bug != "decay_on_norms":  # no decay on norms and biases
        decay = [p for p in trainable if p.ndim >= 2]
        rest = [p for p in trainable if p.ndim < 2]
        params = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    else:
        params = trainable
    optimizer = make_optimizer(scenario.optimizer, params, lr, scenario.weight_decay)
    return model, task, optimizer


def _schedule(scenario: Scenario, optimizer: torch.optim.Optimizer) -> Any:
    if scenario.schedule == "warmup":  # as transformers' linear warmup: lr 0 at step 0
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / WARMUP))
    if scenario.schedule == "epoch_step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    return None


def _loss(task: Task, output: torch.Tensor, targets: torch.Tensor, bug: str) -> torch.Tensor:
    if task.classification:
        return functional.cross_entropy(output, targets)
    if bug == "mse_broadcast":
        targets = targets.squeeze(1)  # [B] against the model's [B, 1]: a [B, B] loss
    return functional.mse_loss(output, targets)


def train(scenario: Scenario, result: RunResult) -> None:
    bug = scenario.bug
    model, task, optimizer = build(scenario)
    schedule = _schedule(scenario, optimizer)
    scaler = torch.amp.GradScaler("cpu") if scenario.setup == "amp" else None
    if bug == "scaler_skips":  # an fp16 overflow at every step, forced on the CPU
        model.head.weight.register_hook(lambda grad: grad * math.inf)
    tracer.watch(model, optimizer=optimizer)
    model.train()
    batches = torch.Generator().manual_seed(scenario.seed)
    size = task.inputs.shape[0]
    held = torch.arange(min(256, size))
    dataset = torch.utils.data.TensorDataset(task.inputs, task.targets)
    # in order, as a user who forgot shuffle=True has it: the bug's new iterator at each step
    # then starts at the same first batch (a shuffled one would draw a new first batch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=scenario.batch_size)
    stream = iter(loader)
    for step in range(scenario.steps):
        for _ in range(scenario.accumulation):
            if bug == "repeated_batch":  # a new iterator at each step: its first batch
                inputs, targets = next(iter(loader))
            elif scenario.data == "loader":
                batch = next(stream, None)
                if batch is None:  # a new epoch
                    stream = iter(loader)
                    batch = next(stream)
                inputs, targets = batch
            elif scenario.data == "full":
                inputs, targets = task.inputs, task.targets
            else:
                index = torch.randint(0, size, (scenario.batch_size,), generator=batches)
                inputs, targets = task.inputs[index], task.targets[index]
            if bug == "shuffled_labels":  # labels permuted on their own
                shuffled = torch.randint(0, size, (targets.shape[0],), generator=batches)
                targets = task.targets[shuffled]
            output = model(inputs)
            loss = _loss(task, output, targets, bug)
            backward = loss if bug == "accumulate_undivided" else loss / scenario.accumulation
            if scenario.zero_grad == "before_backward":
                optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(backward).backward()
            else:
                backward.backward()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if bug != "no_zero_grad" and scenario.zero_grad != "before_backward":
            optimizer.zero_grad(set_to_none=scenario.zero_grad != "to_zeros")
        if schedule is not None and (
            (scenario.schedule == "warmup" and bug != "scheduler_never_stepped")
            or (scenario.schedule == "epoch_step" and bug == "scheduler_per_batch")
            or (scenario.schedule == "epoch_step" and (step + 1) % EPOCH == 0)
        ):
            schedule.step()
        metrics: dict[str, Any] = {"loss": loss.detach()}
        if task.classification:
            metrics["accuracy"] = task.accuracy(output.detach(), targets)
        if (step + 1) % EPOCH == 0:
            if bug != "train_mode_eval":
                model.eval()
            with torch.no_grad():
                metrics["eval_loss"] = _loss(
                    task, model(task.inputs[held]), task.targets[held], bug
                )
            if bug != "eval_mode_training":
                model.train()
        tracer.log(metrics)
        tracer.step()
        result.losses.append(float(loss.detach()))


def run(scenario: Scenario, directory: str, extra: dict[str, Any]) -> RunResult:
    """Train `scenario` under a run of its own in `directory`; read back what was found
    online (stored by the writer thread) and offline (`AnomalyDetector` replay)."""
    result = RunResult(scenario.name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place, as a user sees
            run_handle = tracer.init(
                project=PROJECT, run_name=scenario.name, storage_path=directory, **extra
            )
            result.run_id = run_handle.run_id
            try:
                started = time.perf_counter()
                train(scenario, result)
                result.train_seconds = time.perf_counter() - started
            finally:
                tracer.finish()
    finally:
        torch.set_num_threads(threads)
    result.online, result.offline = online_and_offline(directory, PROJECT, result.run_id, **extra)
    result.seconds = time.perf_counter() - start
    return result
