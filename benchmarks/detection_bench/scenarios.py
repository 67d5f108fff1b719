"""The scenario catalogue: what each benchmark run trains, which fault it injects and when,
which anomalies count as finding the fault, and which later anomalies it explains.

Read this module (the scenario types and the faulty runs) and `healthy.py` (the healthy
runs) to add or change a scenario. `catalogue.catalogue()` returns every scenario, each
with its split assigned: scenarios alternate "tune" / "held" in declaration order within
their family, so that both halves cover every family (and, since the healthy runs are
declared in pairs of one schedule, every healthy schedule kind). Tune detector thresholds
on the "tune" half only and read the "held" half as the honest figure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

HEALTHY = "healthy"
HEALTHY_LONG = "healthy_long"
FAULT_FAMILIES = (
    "explosion",
    "nan_inf",
    "spike",
    "divergence",
    "vanishing",
    "dead_layer",
    "memory_leak",
    "plateau",
)
ANY_TYPE: Optional[tuple[str, ...]] = None  # explains anomalies of every type


@dataclass(frozen=True)
class Fault:
    """An injected fault: `kind` (see `training.FaultInjector`), the first step it acts at,
    and its parameters as (name, value) pairs (frozen-friendly)."""

    kind: str
    onset: int
    params: tuple[tuple[str, float], ...] = ()

    def param(self, name: str, default: float = 0.0) -> float:
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Explains:
    """Episodes of `types` (None: any type) starting in [onset, onset + steps + intervals x
    checkpoint_interval] are consequences of the fault (None steps: until the end of run)."""

    types: Optional[tuple[str, ...]]
    steps: Optional[int]
    intervals: int = 0


DESTROYS = (Explains(ANY_TYPE, None),)  # a destroyed run stays destroyed: everything after


@dataclass(frozen=True)
class Scenario:
    """One benchmark run. `window` (+ `window_intervals` x checkpoint_interval) bounds when an
    episode of `expect_types` must start, counted from the onset, or from the climb onset
    when `from_climb` (divergence); None: by the end of the run. `synthetic` runs log a
    synthetic loss of shape `shape` (no model): the long runs."""

    name: str
    family: str
    model: str = "mlp_cls"
    optimizer: str = "adam"  # sgd, sgd_momentum, adam, adamw
    lr: float = 1e-3
    schedule: str = "constant"  # constant, step, warmup_cosine, onecycle, linear, cyclic
    batch_size: int = 32
    steps: int = 500
    seed: int = 0
    fault: Optional[Fault] = None
    expect_types: tuple[str, ...] = ()
    explains: tuple[Explains, ...] = ()
    window: Optional[int] = 0
    window_intervals: int = 0
    from_climb: bool = False
    synthetic: bool = False
    shape: str = ""  # synthetic runs: decay, step_drops, flat_half
    sigma: float = 0.2  # synthetic runs: lognormal noise of the loss
    split: str = ""
    needs_cuda: bool = False

    @property
    def healthy(self) -> bool:
        return self.fault is None

    def replace(self, **changes: object) -> Scenario:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _fault(kind: str, onset: int, **params: float) -> Fault:
    return Fault(kind, onset, tuple(sorted(params.items())))


EXPLOSION_TYPES = ("gradient_explosion", "nan_or_inf", "loss_divergence", "loss_spike")
DIVERGENCE_TYPES = ("loss_divergence", "gradient_explosion", "nan_or_inf")
SPIKE_TYPES = ("loss_spike", "gradient_explosion")


def _explosion(name: str, fault: Fault, **setup: Any) -> Scenario:
    return Scenario(
        name,
        "explosion",
        fault=fault,
        expect_types=EXPLOSION_TYPES,
        explains=DESTROYS,
        window=1,
        **{"steps": 400, **setup},
    )


def _nan(name: str, fault: Fault, **setup: Any) -> Scenario:
    guarded = fault.kind == "inf_loss_skip"
    explains = (Explains(("nan_or_inf", "loss_spike"), 0),) if guarded else DESTROYS
    return Scenario(
        name,
        "nan_inf",
        fault=fault,
        expect_types=("nan_or_inf",),
        explains=explains,
        window=0,
        **{"steps": 400, **setup},
    )


def _spike(name: str, fault: Fault, **setup: Any) -> Scenario:
    count = int(fault.param("count", 1))
    # the huge gradients of those steps (per layer: at the next checkpoint), and a NaN when
    # the corrupted update wrecked the weights
    explains = (Explains((*SPIKE_TYPES, "nan_or_inf"), count, intervals=1),)
    return Scenario(
        name,
        "spike",
        fault=fault,
        expect_types=SPIKE_TYPES,
        explains=explains,
        window=1,
        **{"steps": 450, **setup},
    )


def _divergence(name: str, rate: float, **setup: Any) -> Scenario:
    return Scenario(
        name,
        "divergence",
        fault=_fault("lr_ramp", 250, rate=rate),
        expect_types=DIVERGENCE_TYPES,
        explains=DESTROYS,
        window=20,
        from_climb=True,
        steps=250 + (450 if rate < 1.04 else 200),
        **setup,
    )


def _vanishing(name: str, model: str) -> Scenario:
    # A deep unnormalised net's gradients are products of many layer Jacobians: they vanish
    # and, once training moves the weights, can explode too. In deep_tanh_default_init the
    # first layer's gradient norm goes from 2e-5 (step 10) to 78 (step 130) while the last
    # layer's stays near 0.5: the same fault, so its explosions are explained.
    # A vanished gradient too small to change a float32 weight leaves the layer unchanged:
    # parameters_not_updated says so (the same fault).
    types = (
        "vanishing_gradient",
        "dead_layer",
        "loss_plateau",
        "gradient_explosion",
        "parameters_not_updated",
    )
    return Scenario(
        name,
        "vanishing",
        model=model,
        fault=_fault("present", 0),
        expect_types=("vanishing_gradient",),
        explains=(Explains(types, None),),
        window=None,
        steps=300,
        lr=1e-3,
    )


def _dead(name: str, fault: Fault, **setup: Any) -> Scenario:
    # A dead layer's weights stop changing: parameters_not_updated names the same layers.
    types: tuple[str, ...] = ("dead_layer", "parameters_not_updated")
    if fault.kind == "dead_relu":  # the loss jumps, then stays flat: a destroyed layer
        types += ("loss_spike", "loss_plateau", "loss_divergence", "gradient_explosion")
    return Scenario(
        name,
        "dead_layer",
        fault=fault,
        expect_types=("dead_layer",),
        explains=(Explains(types, None),),
        window=0,
        window_intervals=2,
        **{"steps": 400, **setup},
    )


def _leak(name: str, megabytes: float, cuda: bool = False) -> Scenario:
    return Scenario(
        name,
        "memory_leak",
        fault=_fault("cuda_leak" if cuda else "leak", 100, mb=megabytes),
        expect_types=("memory_leak",),
        explains=(Explains(("memory_leak", "memory_spike"), None),),
        window=100,
        steps=400,
        needs_cuda=cuda,
    )


def _plateau(name: str, fault: Fault, **setup: Any) -> Scenario:
    return Scenario(
        name,
        "plateau",
        fault=fault,
        expect_types=("loss_plateau",),
        # an lr of 0 leaves every parameter unchanged: parameters_not_updated names the cause;
        # an optimizer that stops stepping is recorded as skipped steps: skipped_steps does
        explains=(Explains(("loss_plateau", "parameters_not_updated", "skipped_steps"), None),),
        window=150,
        **{"steps": 450, **setup},
    )


def faulty() -> list[Scenario]:
    """The injected-fault scenarios, grouped by family."""
    lr_jump, nan, corrupt = "lr_jump", "nan_input", "corrupt"
    return [
        _explosion("lr_x100_sgd", _fault(lr_jump, 250, factor=100), optimizer="sgd", lr=0.05),
        _explosion(
            "lr_x1000_adam_regression", _fault(lr_jump, 250, factor=1000), model="regression"
        ),
        _explosion(
            "lr_x1000_sgd_cnn",
            _fault(lr_jump, 250, factor=1000),
            model="cnn",
            optimizer="sgd_momentum",
            lr=0.01,
        ),
        _explosion("weights_x1e3", _fault("scale_weights", 250, factor=1e3)),
        _explosion(
            "lr_x300_adam_transformer", _fault(lr_jump, 250, factor=300), model="transformer"
        ),
        _nan("nan_input_persistent", _fault(nan, 250)),
        _nan(
            "nan_input_persistent_sgd_regression",
            _fault(nan, 250),
            model="regression",
            optimizer="sgd",
            lr=0.05,
        ),
        _nan("nan_weight_cnn", _fault("nan_weight", 250), model="cnn"),
        _nan("inf_loss_skipped_regression", _fault("inf_loss_skip", 250), model="regression"),
        _nan("inf_loss_skipped_transformer", _fault("inf_loss_skip", 250), model="transformer"),
        _spike("targets_x50_once", _fault(corrupt, 300, count=1, scale=50), model="regression"),
        _spike("shuffled_large_inputs_once", _fault(corrupt, 300, count=1, scale=20)),
        _spike(
            "targets_x50_3_batches_sgd",
            _fault(corrupt, 300, count=3, scale=50),
            model="regression",
            optimizer="sgd_momentum",
            lr=0.01,
        ),
        _spike("random_labels_burst", _fault("random_labels", 300, count=5)),
        _spike("shuffled_large_inputs_cnn", _fault(corrupt, 300, count=1, scale=20), model="cnn"),
        _spike(
            "random_labels_burst_transformer",
            _fault("random_labels", 300, count=5),
            model="transformer",
            steps=600,
        ),
        _spike(
            "long_spike_x20",
            _fault("synthetic_spike", 180_000, factor=20),
            steps=200_000,
            synthetic=True,
            shape="decay",
            sigma=0.2,
        ),
        _divergence("ramp_1.02_sgd", 1.02, optimizer="sgd", lr=0.05),
        _divergence("ramp_1.03_adam_regression", 1.03, model="regression"),
        _divergence("ramp_1.05_sgd_regression", 1.05, model="regression", optimizer="sgd", lr=0.05),
        _divergence("ramp_1.1_adam", 1.1),
        _divergence("ramp_1.015_adam_cnn", 1.015, model="cnn"),
        _divergence("ramp_1.08_adam_transformer", 1.08, model="transformer"),
        _vanishing("deep_sigmoid_default_init", "deep_sigmoid"),
        _vanishing("deep_tanh_default_init", "deep_tanh"),
        _vanishing("deep_sigmoid_tiny_init", "deep_sigmoid_tiny"),
        _vanishing("deep_tanh_tiny_init", "deep_tanh_tiny"),
        _dead("dead_head_cls", _fault("present", 0), model="mlp_cls_dead_head"),
        _dead("dead_relu_bias_cls", _fault("dead_relu", 205)),
        _dead(
            "dead_head_regression",
            _fault("present", 0),
            model="regression_dead_head",
            optimizer="sgd_momentum",
            lr=0.01,
        ),
        _dead("dead_relu_bias_regression", _fault("dead_relu", 205), model="regression"),
        _leak("leak_1mb", 1),
        _leak("leak_2mb", 2),
        _leak("leak_4mb", 4),
        _leak("leak_8mb", 8),
        _leak("cuda_leak_8mb", 8, cuda=True),
        _plateau("lr_zero_adam", _fault("lr_zero", 120)),
        _plateau("lr_zero_sgd", _fault("lr_zero", 120), optimizer="sgd", lr=0.05),
        _plateau("frozen_requires_grad", _fault("freeze", 120)),
        _plateau(
            "optimizer_stops_stepping",
            _fault("stop_stepping", 120),
            model="regression",
            optimizer="sgd",
            lr=0.02,
        ),
    ]
