"""A small, realistic CPU training loop with fault hooks, for judging Tracer's detectors.

Shared by `tests/core/test_detection_scenarios.py` (which asserts on it) and
`benchmarks/bench_detection.py` (which measures recall, precision and false alarms with it).

The task: regression onto a fixed random "teacher" network plus label noise, learned by a
3-layer MLP from random minibatches, with linear warmup and a step-decay LR schedule, so the
per-batch loss is as noisy as in real training. A `Scenario` names the faults to inject (LR
jumps and ramps, a NaN batch, an infinite loss, corrupted batches, a leaking loop, a
vanishing-gradient net, a dead layer) and, for each `Fault`, the anomalies that must find it,
by when, and which later anomalies are its consequences (for precision).

`run_scenario` trains it under `tracer.init(checkpoint_interval=200, ...)`, then reads the
anomalies found online (stored by the writer thread during training) and recomputes them
offline with `AnomalyDetector` from what was stored.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

CHECKPOINT_INTERVAL = 200  # a realistic interval (the default is 1000)
SERIOUS = ("warning", "critical")
MB_FLOATS = 262_144  # float32 values in one MiB

# Every fault must be found within one checkpoint interval (NaN and Inf at their exact step).
# The gradual ones need a window by nature: loss_divergence needs rising_blocks + 1 = 4 block
# medians of 20 values each above the one before (~80 steps after a steady rise starts);
# loss_plateau needs patience = 4 blocks of 25 values without a new best beyond noise.
DIVERGENCE_WITHIN = CHECKPOINT_INTERVAL
PLATEAU_WITHIN = CHECKPOINT_INTERVAL

AnomalyKey = tuple[str, int, str]  # (anomaly_type, step, subject)


@dataclass(frozen=True)
class Expect:
    """An anomaly a fault must cause: one of `types`, at most `within` steps after the fault
    (or exactly at the fault step), about `subject` when given."""

    types: tuple[str, ...]
    within: int = CHECKPOINT_INTERVAL
    exact: bool = False
    subject: Optional[str] = None

    def matches(self, anomaly: Mapping[str, Any], fault_step: int) -> bool:
        if anomaly["anomaly_type"] not in self.types:
            return False
        if self.subject is not None and anomaly["subject"] != self.subject:
            return False
        step = int(anomaly["step"])
        if self.exact:
            return step == fault_step
        return fault_step <= step <= fault_step + self.within


@dataclass(frozen=True)
class Fault:
    """An injected fault: what it is, when, what must detect it, and which later anomalies
    are its consequences: of `explains_types` (None: any type) at steps `step` to
    `effect_until` (None: the end of the run; a destroyed run stays destroyed)."""

    label: str
    step: int
    expect: tuple[Expect, ...]
    effect_until: Optional[int] = None
    explains_types: Optional[tuple[str, ...]] = None

    def explains(self, anomaly: Mapping[str, Any]) -> bool:
        step = int(anomaly["step"])
        if step < self.step or (self.effect_until is not None and step > self.effect_until):
            return False
        return self.explains_types is None or anomaly["anomaly_type"] in self.explains_types


@dataclass(frozen=True)
class Scenario:
    """One training run: model, optimizer, schedule, and the faults to inject."""

    name: str
    steps: int = 300
    seed: int = 0
    architecture: str = "mlp"  # "mlp", "deep_sigmoid" or "dead_branch"
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9)
    lr: float = 3e-3
    batch_size: int = 16
    warmup: int = 20
    decay_every: int = 150
    decay: float = 0.5
    lr_jump: Optional[tuple[int, float]] = None  # (step, factor) applied from that step on
    lr_ramp: Optional[tuple[int, float]] = None  # (step, factor per step) from that step on
    lr_zero_from: Optional[int] = None
    freeze_from: Optional[int] = None  # requires_grad off for every parameter from then on
    stop_stepping_from: Optional[int] = None  # optimizer.step() no longer called
    schedule: str = "warmup_step"  # see scheduled_lr
    nan_batch_at: Optional[int] = None  # one input value of that batch is NaN
    inf_loss_at: Optional[int] = None  # the loss overflows; the loop skips that update
    corrupt: Optional[tuple[int, int, float]] = None  # (first step, count, target scale)
    leak: Optional[tuple[int, float]] = None  # (first step, MiB kept alive per step, at least)
    step_sleep: float = 0.0  # seconds per step (a slower model), for time-based detectors
    tracer_options: Mapping[str, Any] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


@dataclass
class Outcome:
    """What a scenario run produced, and how its anomalies score against its faults."""

    scenario: Scenario
    run_id: str
    steps_run: int = 0
    online: list[dict[str, Any]] = field(default_factory=list)
    offline: list[dict[str, Any]] = field(default_factory=list)
    halted: Optional[BaseException] = None
    halted_at: Optional[int] = None  # the step whose tracer.step() raised
    fault_time: Optional[float] = None  # perf_counter() when the first fault was injected
    halt_time: Optional[float] = None  # perf_counter() when tracer.step() raised
    run_record: dict[str, Any] = field(default_factory=dict)

    def anomalies(self, which: str = "online") -> list[dict[str, Any]]:
        return self.online if which == "online" else self.offline

    def serious(self, which: str = "online") -> list[dict[str, Any]]:
        return [a for a in self.anomalies(which) if a["severity"] in SERIOUS]

    def keys(self, which: str = "online") -> set[AnomalyKey]:
        return {(a["anomaly_type"], int(a["step"]), a["subject"]) for a in self.anomalies(which)}

    @property
    def agree(self) -> bool:
        """Online and offline found the same anomalies (type, step, subject)."""
        return self.keys("online") == self.keys("offline")

    def detected(self, fault: Fault, which: str = "online") -> bool:
        """Every expectation of `fault` is met by some anomaly."""
        found = self.anomalies(which)
        return all(any(e.matches(a, fault.step) for a in found) for e in fault.expect)

    def latency(self, fault: Fault, which: str = "online") -> Optional[int]:
        """Steps from the fault to the last of its expectations' first matching anomaly."""
        found = self.anomalies(which)
        firsts = []
        for expect in fault.expect:
            steps = [int(a["step"]) for a in found if expect.matches(a, fault.step)]
            if not steps:
                return None
            firsts.append(min(steps))
        return max(firsts) - fault.step

    def explained(self, which: str = "online") -> tuple[int, int]:
        """(serious anomalies that some injected fault explains, all serious anomalies)."""
        serious = self.serious(which)
        hits = sum(any(f.explains(a) for f in self.scenario.faults) for a in serious)
        return hits, len(serious)


def make_data(seed: int, count: int = 4096, features: int = 16) -> tuple[Any, Any]:
    """Inputs and noisy targets of a random 2-layer tanh teacher (label noise std 0.3)."""
    import torch

    generator = torch.Generator().manual_seed(1000 + seed)
    inputs = torch.randn(count, features, generator=generator)
    w1 = torch.randn(features, 32, generator=generator) / math.sqrt(features)
    w2 = torch.randn(32, 1, generator=generator) / math.sqrt(32)
    clean = torch.tanh(inputs @ w1) @ w2 * 2.0
    targets = clean + 0.3 * torch.randn(count, 1, generator=generator)
    return inputs, targets


def make_model(architecture: str, seed: int, features: int = 16) -> Any:
    """The model. "mlp": 16-64-64-1 with ReLU. "deep_sigmoid": 12 Linear+Sigmoid layers with
    tiny weights (std 0.02), so early layers' gradients shrink ~0.25 x |W| per layer.
    "dead_branch": the MLP (as `body`) plus a head `aux` whose output is multiplied by 0 (a
    wiring bug): it is watched but its gradient is exactly zero at every step."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if architecture == "mlp":
        return nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
        )
    if architecture == "deep_sigmoid":
        layers: list[Any] = []
        for _ in range(12):
            linear = nn.Linear(features, features)
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.Sigmoid()]
        layers.append(nn.Linear(features, 1))
        return nn.Sequential(*layers)
    if architecture == "dead_branch":

        class DeadBranch(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = make_model("mlp", seed, features)
                self.aux = nn.Linear(features, 1)

            def forward(self, inputs: Any) -> Any:
                return self.body(inputs) + 0.0 * self.aux(inputs)

        return DeadBranch()
    raise ValueError(f"unknown architecture {architecture!r}")


def leak_mib(at_least: float) -> float:
    """MiB to leak per step: `at_least`, or 1.5% of the process's RSS when that is more.

    memory_leak asks for growth of 20% of the starting level over 40 samples; in a test
    process that already holds a lot (a whole test session), a fixed few MiB per step would
    fall short of that however long it leaks.
    """
    import psutil

    return max(at_least, 0.015 * float(psutil.Process().memory_info().rss) / 2**20)


def schedule_factor(scenario: Scenario, step: int) -> float:
    """The lr multiplier of the scenario's schedule at `step`: "warmup_step" (linear warmup,
    then x `decay` every `decay_every` steps), "constant", "warmup_cosine" (to 0 at the last
    step), "onecycle" (up for 30% of the run from lr/25, then cosine down to lr/1e4),
    "linear" (to 0 at the last step) or "cyclic" (triangles between lr/10 and lr, 6 ramps)."""
    kind, total = scenario.schedule, scenario.steps
    warmup = min(1.0, (step + 1) / max(scenario.warmup, 1))
    if kind == "warmup_step":
        return warmup * scenario.decay ** (step // scenario.decay_every)
    if kind == "constant":
        return 1.0
    if kind == "warmup_cosine":
        done = max(0.0, (step - scenario.warmup) / max(1, total - scenario.warmup))
        return warmup * 0.5 * (1 + math.cos(math.pi * done))
    if kind == "onecycle":
        peak = 0.3 * total
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * step / peak
        done = (step - peak) / (total - peak)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * done))
    if kind == "linear":
        return 1.0 - step / total
    if kind == "cyclic":
        ramp = max(1, total // 6)
        position = (step % (2 * ramp)) / ramp
        return 0.1 + 0.9 * (position if position <= 1 else 2 - position)
    raise ValueError(f"unknown schedule {kind!r}")


def scheduled_lr(scenario: Scenario, step: int) -> float:
    """The scenario's schedule (see schedule_factor), then the injected LR faults."""
    lr = scenario.lr * schedule_factor(scenario, step)
    if scenario.lr_jump is not None and step >= scenario.lr_jump[0]:
        lr *= scenario.lr_jump[1]
    if scenario.lr_ramp is not None and step >= scenario.lr_ramp[0]:
        lr *= scenario.lr_ramp[1] ** (step - scenario.lr_ramp[0] + 1)
    if scenario.lr_zero_from is not None and step >= scenario.lr_zero_from:
        lr = 0.0
    return lr


def run_scenario(scenario: Scenario, storage_path: str = "./.tracer") -> Outcome:
    """Train `scenario` under Tracer; return the anomalies found online and offline.

    A `tracer.TrainingHalted` from `tracer.step()` ends training early (recorded in the
    outcome); the run is always finished before the anomalies are read back. Torch runs on
    one thread meanwhile: for a model this small more threads only contend with the writer
    and with other processes on a shared machine (two such test sessions side by side ran
    6x slower with torch's default two threads).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(scenario, storage_path)
    finally:
        torch.set_num_threads(threads)


def _train(scenario: Scenario, storage_path: str) -> Outcome:
    import torch
    from torch import nn

    import tracer
    from tracer.analysis import AnomalyDetector, QueryEngine
    from tracer.config import TracerConfig
    from tracer.storage import StorageBackend

    inputs, targets = make_data(scenario.seed)
    model = make_model(scenario.architecture, scenario.seed)
    if scenario.optimizer == "adamw":
        optimizer: Any = torch.optim.AdamW(model.parameters(), lr=scenario.lr, weight_decay=1e-4)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=scenario.lr, momentum=0.9)
    options = {
        "checkpoint_interval": CHECKPOINT_INTERVAL,
        "storage_path": storage_path,
        **scenario.tracer_options,
    }
    run = tracer.init(project="detection", **options)
    tracer.watch(model, optimizer=optimizer)
    batches = torch.Generator().manual_seed(scenario.seed)
    first_fault = min((f.step for f in scenario.faults), default=None)
    hoard: list[Any] = []  # what the leaking loop keeps alive
    leak_floats = 0
    outcome = Outcome(scenario, run.run_id)
    step = 0
    try:
        for step in range(scenario.steps):
            if step == first_fault:
                outcome.fault_time = time.perf_counter()
            lr = scheduled_lr(scenario, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.randint(0, inputs.shape[0], (scenario.batch_size,), generator=batches)
            x, y = inputs[index], targets[index]  # fresh copies (advanced indexing)
            if scenario.freeze_from == step:
                model.requires_grad_(False)
            if scenario.nan_batch_at == step:
                x[0, 0] = math.nan
            if scenario.corrupt is not None:
                first, count, scale = scenario.corrupt
                if first <= step < first + count:
                    y = y * scale
            loss = nn.functional.mse_loss(model(x), y)
            if scenario.inf_loss_at == step:
                loss = loss * math.inf  # as an fp16 overflow would
            if scenario.inf_loss_at is not None and not torch.isfinite(loss):
                optimizer.zero_grad()  # a guarded loop: skip the update, keep training
            else:
                if loss.requires_grad:  # not after freeze_from: nothing to backpropagate
                    loss.backward()
                if scenario.stop_stepping_from is None or step < scenario.stop_stepping_from:
                    optimizer.step()
                optimizer.zero_grad()
            if scenario.leak is not None and step >= scenario.leak[0]:
                if not leak_floats:
                    leak_floats = int(leak_mib(scenario.leak[1]) * MB_FLOATS)
                hoard.append(torch.ones(leak_floats))  # a fresh tensor, its pages touched
            if scenario.step_sleep:
                time.sleep(scenario.step_sleep)
            tracer.log({"loss": loss.detach(), "lr": lr})
            tracer.step()
        outcome.steps_run = scenario.steps
    except tracer.TrainingHalted as halted:
        outcome.halt_time = time.perf_counter()
        outcome.halted, outcome.halted_at, outcome.steps_run = halted, step, step + 1
    finally:
        tracer.finish()
        hoard.clear()
    with QueryEngine(storage_path=storage_path) as query:
        outcome.online = query.get_anomalies(run.run_id)
        outcome.run_record = dict(query.resolve_run(run.run_id))
    store = StorageBackend(TracerConfig(project_name="detection", storage_path=storage_path))
    try:
        outcome.offline = AnomalyDetector(store).detect_all_anomalies(run.run_id)
    finally:
        store.close()
    return outcome


# -- the scenarios ----------------------------------------------------------------------------

NAN_STEP = 137
INF_STEP = 163
JUMP_STEP = 150
CORRUPT_STEP = 180
RAMP_STEP = 120
ZERO_STEP = 20  # the end of warmup
LEAK_STEP = 30
FREEZE_STEP = 100


def fault_scenarios() -> dict[str, Scenario]:
    """One scenario per fault kind, by name, each with the anomalies it must cause."""
    scenarios = [
        Scenario(
            "lr_x1000",
            lr_jump=(JUMP_STEP, 1000.0),
            faults=(
                Fault(
                    "LR x1000",
                    JUMP_STEP,
                    (Expect(("gradient_explosion", "loss_divergence", "nan_or_inf")),),
                ),
            ),
        ),
        Scenario(
            "nan_batch",
            nan_batch_at=NAN_STEP,
            faults=(
                Fault(
                    "one NaN input value",
                    NAN_STEP,
                    (
                        Expect(("nan_or_inf",), exact=True, subject="loss"),
                        Expect(("nan_or_inf",), exact=True, subject="0.weight"),
                    ),
                ),
            ),
        ),
        Scenario(
            "inf_loss",
            inf_loss_at=INF_STEP,
            faults=(
                Fault(
                    "inf loss, update skipped",
                    INF_STEP,
                    (Expect(("nan_or_inf",), exact=True, subject="loss"),),
                    effect_until=INF_STEP,
                ),
            ),
        ),
        Scenario(
            "corrupt_batches",
            corrupt=(CORRUPT_STEP, 3, 50.0),
            faults=(
                Fault(
                    "3 batches, targets x50",
                    CORRUPT_STEP,
                    (Expect(("loss_spike",), exact=True, subject="loss"),),
                    # the huge gradients of those steps: global norm, per layer at the next
                    # checkpoint
                    effect_until=CORRUPT_STEP + CHECKPOINT_INTERVAL,
                    explains_types=("loss_spike", "gradient_explosion"),
                ),
            ),
        ),
        Scenario(
            "lr_ramp",
            steps=320,
            lr_ramp=(RAMP_STEP, 1.05),
            faults=(
                Fault(
                    "LR x1.05 per step",
                    RAMP_STEP,
                    (Expect(("loss_divergence",), within=DIVERGENCE_WITHIN),),
                ),
            ),
        ),
        Scenario(
            "lr_zero",
            steps=420,
            lr_zero_from=ZERO_STEP,
            faults=(
                Fault(
                    "LR 0 after warmup",
                    ZERO_STEP,
                    (Expect(("loss_plateau",), within=PLATEAU_WITHIN),),
                ),
            ),
        ),
        Scenario(
            "frozen",
            steps=300,
            freeze_from=FREEZE_STEP,
            faults=(
                Fault(
                    "every parameter frozen",
                    FREEZE_STEP,
                    (Expect(("loss_plateau",), within=PLATEAU_WITHIN),),
                ),
            ),
        ),
        Scenario(
            "optimizer_stops",
            steps=300,
            stop_stepping_from=FREEZE_STEP,
            faults=(
                Fault(
                    "optimizer.step() no longer called",
                    FREEZE_STEP,
                    (Expect(("loss_plateau",), within=PLATEAU_WITHIN),),
                ),
            ),
        ),
        Scenario(
            "deep_sigmoid",
            steps=200,
            architecture="deep_sigmoid",
            faults=(
                Fault(
                    "12 sigmoid layers, tiny init",
                    0,
                    (
                        Expect(("vanishing_gradient",), subject="0.weight"),
                        Expect(("vanishing_gradient",), subject="2.weight"),
                    ),
                    explains_types=("vanishing_gradient",),
                ),
            ),
        ),
        Scenario(
            "dead_layer",
            steps=200,
            architecture="dead_branch",
            faults=(
                Fault(
                    "head output x 0",
                    0,
                    (
                        Expect(("dead_layer",), subject="aux.weight"),
                        Expect(("dead_layer",), subject="aux.bias"),
                    ),
                    explains_types=("dead_layer",),
                ),
            ),
        ),
        Scenario(
            "memory_leak",
            steps=130,
            leak=(LEAK_STEP, 4.0),
            step_sleep=0.02,
            tracer_options={"system_metrics_interval": 0.02},
            faults=(
                Fault(
                    ">= 4 MiB (1.5% of RSS) kept per step",
                    LEAK_STEP,
                    (Expect(("memory_leak",), subject="system/process_rss_mb"),),
                    explains_types=("memory_leak", "memory_spike"),
                ),
            ),
        ),
    ]
    return {scenario.name: scenario for scenario in scenarios}


CLEAN_SETUPS: tuple[Mapping[str, Any], ...] = (
    {"optimizer": "adamw", "lr": 3e-3, "batch_size": 16},
    {"optimizer": "sgd", "lr": 0.02, "batch_size": 16},
    {"optimizer": "adamw", "lr": 3e-3, "batch_size": 8},
)


SCHEDULES = ("constant", "warmup_cosine", "onecycle", "linear", "cyclic")


def schedule_scenarios(steps: int = 400) -> list[Scenario]:
    """Healthy runs under each other lr schedule (clean_scenarios use warmup + step decay),
    alternating AdamW batch 16, SGD with momentum batch 16 and AdamW batch 8, at default
    detector settings."""
    return [
        Scenario(f"healthy_{kind}", seed=index, steps=steps, schedule=kind).replace(
            **CLEAN_SETUPS[index % len(CLEAN_SETUPS)]
        )
        for index, kind in enumerate(SCHEDULES)
    ]


def clean_scenarios(seeds: Sequence[int] = (0, 1, 2), steps: int = 400) -> list[Scenario]:
    """Healthy runs: small noisy batches, warmup, step decay; seed i uses setup i mod 3
    (AdamW batch 16, SGD with momentum batch 16, AdamW batch 8). The system sampler runs
    every 50 ms so the memory detector judges a healthy process too."""
    return [
        Scenario(
            f"clean_seed{seed}",
            seed=seed,
            steps=steps,
            tracer_options={"system_metrics_interval": 0.05},
        ).replace(**CLEAN_SETUPS[seed % len(CLEAN_SETUPS)])
        for seed in seeds
    ]
