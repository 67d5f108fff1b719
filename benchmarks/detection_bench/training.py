"""Runs one scenario under Tracer and reads back what the detectors found.

`run_scenario(scenario, interval, directory)` trains the scenario's model on the CPU (one
torch thread, seeded, deterministic) with its fault injected by a `FaultInjector`, or logs
its synthetic loss (long runs), under `tracer.init(checkpoint_interval=interval, ...)`; then
it reads the anomalies stored online by the writer thread and recomputes them offline with
`AnomalyDetector` from what was stored. The logged losses come back too (the divergence
family measures time to detect from the loss's climb onset).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

import tracer
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.config import TracerConfig
from tracer.storage import StorageBackend

from .models import Task, make_model, make_task
from .scenarios import Fault, Scenario

PROJECT = "bench-detection"
SYSTEM_INTERVAL = 0.05  # seconds between system samples (RSS and friends)
MB_FLOATS = 262_144  # float32 values in one MiB


@dataclass
class RunResult:
    """What one run of a scenario at one checkpoint interval produced."""

    scenario: str
    interval: int
    run_id: str = ""
    steps_run: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    online: list[dict[str, Any]] = field(default_factory=list)
    offline: list[dict[str, Any]] = field(default_factory=list)
    skipped: Optional[str] = None  # why the scenario did not run (no CUDA, ...)
    error: Optional[str] = None  # the exception that crashed training or scoring


class FaultInjector:
    """Applies one fault to the training loop; a no-op without a fault.

    Kinds: `lr_jump` (lr x factor from onset on), `lr_ramp` (lr x rate^(t - onset + 1)),
    `lr_zero`, `scale_weights` (every parameter x factor once, at onset), `nan_input` (one
    input value NaN in every batch from onset on), `nan_weight` (one weight set to NaN at
    onset), `inf_loss_skip` (the loss is inf at onset; the guarded loop skips that update),
    `corrupt` (`count` batches from onset: regression targets x scale; classification labels
    shuffled and inputs x scale), `random_labels` (`count` batches of random labels),
    `dead_relu` (the first layer's bias set to -100 at onset), `freeze` (requires_grad off
    from onset), `stop_stepping` (optimizer.step() no longer called), `leak` / `cuda_leak`
    (`mb` MiB kept alive per step from onset), `present` (built into the model).
    """

    def __init__(self, fault: Optional[Fault], seed: int) -> None:
        self.fault = fault
        self.kind = fault.kind if fault else ""
        self.onset = fault.onset if fault else 0
        self.generator = torch.Generator().manual_seed(seed + 77)
        self.hoard: list[torch.Tensor] = []

    def active(self, step: int, count: Optional[int] = None) -> bool:
        if self.fault is None or step < self.onset:
            return False
        return count is None or step < self.onset + count

    def param(self, name: str, default: float = 0.0) -> float:
        return self.fault.param(name, default) if self.fault else default

    def lr_factor(self, step: int) -> float:
        if not self.active(step):
            return 1.0
        if self.kind == "lr_jump":
            return self.param("factor")
        if self.kind == "lr_ramp":
            return float(self.param("rate") ** (step - self.onset + 1))
        return 0.0 if self.kind == "lr_zero" else 1.0

    def batch(
        self, step: int, task: Task, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as the faulty data pipeline delivers it (fresh tensors: no aliasing)."""
        if self.kind == "nan_input" and self.active(step):
            inputs = inputs.clone()
            inputs.view(-1)[0] = math.nan
        count = int(self.param("count", 1))
        if self.kind == "corrupt" and self.active(step, count):
            scale = self.param("scale")
            if task.classification:
                order = torch.randperm(targets.shape[0], generator=self.generator)
                targets, inputs = targets[order], inputs * scale
            else:
                targets = targets * scale
        if self.kind == "random_labels" and self.active(step, count):
            targets = torch.randint(0, task.classes, targets.shape, generator=self.generator)
        return inputs, targets

    @torch.no_grad()
    def before_step(self, step: int, model: torch.nn.Module) -> None:
        """Faults done to the model itself, once at onset."""
        if step != self.onset or self.fault is None:
            return
        if self.kind == "scale_weights":
            for parameter in model.parameters():
                parameter.mul_(self.param("factor"))
        elif self.kind == "nan_weight":
            next(iter(model.parameters())).view(-1)[0] = math.nan
        elif self.kind == "dead_relu":
            first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            first.bias.fill_(-100.0)
        elif self.kind == "freeze":
            model.requires_grad_(False)

    def scale_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        if self.kind == "inf_loss_skip" and step == self.onset:
            return loss * math.inf  # as an fp16 overflow would
        return loss

    @property
    def guarded(self) -> bool:
        """The loop skips the update of a non-finite loss (only the guarded scenarios)."""
        return self.kind == "inf_loss_skip"

    def optimizer_steps(self, step: int) -> bool:
        return not (self.kind == "stop_stepping" and self.active(step))

    def after_step(self, step: int) -> None:
        if self.kind in ("leak", "cuda_leak") and self.active(step):
            device = "cuda" if self.kind == "cuda_leak" else "cpu"
            self.hoard.append(torch.ones(int(self.param("mb") * MB_FLOATS), device=device))


def make_optimizer(kind: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    parameters = model.parameters()
    if kind == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    if kind == "sgd_momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-2)
    raise ValueError(f"unknown optimizer {kind!r}")


def make_schedule(kind: str, optimizer: torch.optim.Optimizer, lr: float, steps: int) -> Any:
    """A torch LR scheduler, stepped once per training step."""
    schedulers = torch.optim.lr_scheduler
    if kind == "onecycle":
        return schedulers.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, cycle_momentum=False)
    if kind == "cyclic":
        return schedulers.CyclicLR(
            optimizer, base_lr=lr / 10, max_lr=lr, step_size_up=steps // 6, cycle_momentum=False
        )
    warmup = 50

    def factor(step: int) -> float:
        if kind == "step":
            return float(0.1 ** (step // (steps // 3)))
        if kind == "warmup_cosine":
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        if kind == "linear":
            return 1.0 - step / steps
        return 1.0

    return schedulers.LambdaLR(optimizer, factor)


def _train(scenario: Scenario, result: RunResult) -> None:
    task = make_task(scenario.model, scenario.seed)
    model = make_model(scenario.model, scenario.seed)
    optimizer = make_optimizer(scenario.optimizer, model, scenario.lr)
    schedule = make_schedule(scenario.schedule, optimizer, scenario.lr, scenario.steps)
    injector = FaultInjector(scenario.fault, scenario.seed)
    tracer.watch(model, optimizer=optimizer)
    batches = torch.Generator().manual_seed(scenario.seed)
    try:
        for step in range(scenario.steps):
            index = torch.randint(
                0, task.inputs.shape[0], (scenario.batch_size,), generator=batches
            )
            inputs, targets = injector.batch(step, task, task.inputs[index], task.targets[index])
            injector.before_step(step, model)
            scheduled = [group["lr"] for group in optimizer.param_groups]
            lr = scheduled[0] * injector.lr_factor(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            output = model(inputs)
            loss = injector.scale_loss(step, task.loss(output, targets))
            if injector.guarded and not torch.isfinite(loss):
                optimizer.zero_grad()  # a guarded loop: skip the update, keep training
            else:
                if loss.requires_grad:
                    loss.backward()  # type: ignore[no-untyped-call]
                if injector.optimizer_steps(step):
                    optimizer.step()
                optimizer.zero_grad()
            for group, value in zip(optimizer.param_groups, scheduled, strict=True):
                group["lr"] = value
            schedule.step()
            injector.after_step(step)
            metrics: dict[str, Any] = {"loss": loss.detach(), "lr": lr}
            if task.classification:
                metrics["accuracy"] = task.accuracy(output.detach(), targets)
            tracer.log(metrics)
            tracer.step()
            result.losses.append(float(loss.detach()))
            result.steps_run = step + 1
    finally:
        injector.hoard.clear()


def synthetic_losses(scenario: Scenario) -> np.ndarray:
    """The long runs' loss: level(t) x lognormal noise; the level decays towards 0.5 (time
    constant a fifth of the run: 40,000 steps of 200,000), halves at 3 steps (step_drops),
    or is flat for the second half (flat_half); a synthetic_spike fault multiplies one step."""
    steps = scenario.steps
    rng = np.random.default_rng(scenario.seed + 4242)
    u = np.arange(steps) / steps
    if scenario.shape == "flat_half":
        level = np.where(u < 0.5, 0.5 + 2.0 * np.exp(-10.0 * u), 0.5 + 2.0 * np.exp(-5.0))
    else:
        level = 0.5 + 2.0 * np.exp(-5.0 * u)
    if scenario.shape == "step_drops":
        level = level * 0.5 ** np.searchsorted([0.25, 0.5, 0.75], u, side="right")
    losses = level * rng.lognormal(0.0, scenario.sigma, steps)
    fault = scenario.fault
    if fault is not None and fault.kind == "synthetic_spike":
        losses[fault.onset] *= fault.param("factor")
    return losses


def _log_synthetic(scenario: Scenario, result: RunResult) -> None:
    losses = synthetic_losses(scenario).tolist()
    log, step = tracer.log, tracer.step
    for index, value in enumerate(losses):
        log({"loss": value})
        step()
        result.steps_run = index + 1
    result.losses = losses


def release_freed_memory() -> None:
    """Give the memory freed by earlier scenarios back to the OS (glibc's malloc_trim), so
    that each scenario's RSS starts as a fresh process's would. Without it a leak scenario
    that follows another refills the pages the earlier one freed, and its RSS does not grow
    until that pool is used up: a delay no real run has."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim(0)


def online_and_offline(
    directory: str, project: str, run_id: str, **settings: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's anomalies as stored by the writer thread (online), and as `AnomalyDetector`
    finds them replaying the stored run (offline), run with the same `settings`."""
    with QueryEngine(storage_path=directory) as query:
        online = [dict(a) for a in query.get_anomalies(run_id)]
    config = TracerConfig(project_name=project, storage_path=directory, **settings)
    store = StorageBackend(config)  # type: ignore[abstract]  # __new__ picks the backend
    try:
        offline = [dict(a) for a in AnomalyDetector(store).detect_all_anomalies(run_id)]
    finally:
        store.close()
    return online, offline


def run_scenario(scenario: Scenario, interval: int, directory: str) -> RunResult:
    """Run `scenario` at `checkpoint_interval=interval`, storing into `directory`. Raises
    whatever training or reading back raised (the caller counts it as a crash)."""
    result = RunResult(scenario.name, interval)
    release_freed_memory()
    if scenario.needs_cuda and not torch.cuda.is_available():
        result.skipped = "no CUDA device"
        return result
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    options: dict[str, Any] = {"storage_path": directory, "checkpoint_interval": interval}
    if scenario.synthetic:
        options["track_system_metrics"] = False
    else:
        options["system_metrics_interval"] = SYSTEM_INTERVAL
    start = time.perf_counter()
    try:
        run = tracer.init(project=PROJECT, run_name=f"{scenario.name}@{interval}", **options)
        result.run_id = run.run_id
        try:
            if scenario.synthetic:
                _log_synthetic(scenario, result)
            else:
                _train(scenario, result)
        finally:
            tracer.finish()
    finally:
        torch.set_num_threads(threads)
    result.online, result.offline = online_and_offline(directory, PROJECT, result.run_id)
    result.seconds = time.perf_counter() - start
    return result
