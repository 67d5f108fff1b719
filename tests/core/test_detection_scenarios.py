"""The built-in detectors on real (small, CPU) training runs with injected faults.

Each fault scenario of `tests/core/detection_harness.py` trains an MLP under Tracer with
`checkpoint_interval=200` and must be found online (by the writer thread during training) and
offline (`AnomalyDetector` replaying storage), within one checkpoint interval of the fault
(NaN and Inf at the very step; the gradual faults within the budget the harness explains),
with the online and offline anomaly sets identical. Healthy runs must raise nothing of
severity warning or critical. `halt_on` must stop training soon after a NaN, and the anomaly
checkpoint must hold what a post-mortem needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import tracer
from tests.core import detection_harness as harness
from tests.core.detection_harness import Outcome, run_scenario
from tests.core.helpers import open_store
from tracer.capture.malloc_stats import heap_in_use_reader
from tracer.core.tracer import EARLY_CHECKPOINT_STEP
from tracer.detection.memory import MemoryDetector
from tracer.detection.runner import DetectorSet
from tracer.records import CheckpointRecord, SampleRecord

torch = pytest.importorskip("torch")

FAULTS = harness.fault_scenarios()


def _describe(anomalies: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {a['step']:>4} {a['anomaly_type']:<18} {a['severity']:<8} {a['subject']}"
        for a in anomalies
    )


def assert_online_equals_offline(outcome: Outcome) -> None:
    online, offline = outcome.keys("online"), outcome.keys("offline")
    assert online == offline, (
        f"online only: {sorted(online - offline)}; offline only: {sorted(offline - online)}"
    )


def _types_at(outcome: Outcome, anomaly_type: str) -> list[tuple[int, str]]:
    return sorted(
        (int(a["step"]), a["subject"]) for a in outcome.online if a["anomaly_type"] == anomaly_type
    )


# -- per-scenario checks beyond "found in time, online == offline" ----------------------------


def _check_lr_x1000(outcome: Outcome) -> None:
    explosions = _types_at(outcome, "gradient_explosion")
    assert (harness.JUMP_STEP + 1, "grad/global_norm") in explosions  # the first step it shows


def _check_nan_batch(outcome: Outcome) -> None:
    (gradient,) = [a for a in outcome.online if a["subject"] == "0.weight"]
    assert "first 0.weight" in gradient["message"]
    assert len(_types_at(outcome, "nan_or_inf")) == 2  # once per episode, not once per step


def _check_inf_loss(outcome: Outcome) -> None:
    # the guarded loop skips that update and recovers: nothing else is reported
    assert [(a["anomaly_type"], a["step"], a["subject"]) for a in outcome.serious()] == [
        ("nan_or_inf", harness.INF_STEP, "loss")
    ]
    assert "inf" in outcome.serious()[0]["message"]


def _check_corrupt_batches(outcome: Outcome) -> None:
    assert _types_at(outcome, "loss_spike") == [(harness.CORRUPT_STEP, "loss")]  # one, not 3
    (spike,) = [a for a in outcome.online if a["anomaly_type"] == "loss_spike"]
    for climb in [a for a in outcome.online if a["anomaly_type"] == "loss_divergence"]:
        # Adam's moments carry the huge gradients on for a few steps: the loss climbs while the
        # spike's episode lasts, the same incident
        assert spike["step"] < climb["step"] <= spike["end_step"]
    assert not _types_at(outcome, "nan_or_inf")


def _check_lr_ramp(outcome: Outcome) -> None:
    (divergence,) = [a for a in outcome.online if a["anomaly_type"] == "loss_divergence"]
    assert divergence["severity"] == "critical"
    assert divergence["value"] > 2.0 * divergence["baseline"]


def _check_lr_zero(outcome: Outcome) -> None:
    # the logged lr is 0: a fault, not a converged run; the update probe names the cause too
    found = {a["anomaly_type"]: a for a in outcome.serious()}
    assert set(found) == {"loss_plateau", "parameters_not_updated"}
    stuck, plateau = found["parameters_not_updated"], found["loss_plateau"]
    assert (stuck["anomaly_type"], stuck["severity"]) == ("parameters_not_updated", "critical")
    assert "lr: 0" in stuck["message"]
    assert (plateau["anomaly_type"], plateau["severity"]) == ("loss_plateau", "warning")
    assert "learning rate is 0" in plateau["message"]


def _check_frozen(outcome: Outcome) -> None:
    (plateau,) = outcome.serious()
    assert (plateau["anomaly_type"], plateau["severity"]) == ("loss_plateau", "warning")
    assert "no parameter has had a gradient" in plateau["message"]
    assert "require grad" in plateau["details"]["hint"]


def _check_optimizer_stops(outcome: Outcome) -> None:
    found = {a["anomaly_type"]: a for a in outcome.serious()}
    assert set(found) == {"loss_plateau", "skipped_steps"}  # no update for 20 steps: critical
    assert found["skipped_steps"]["severity"] == "critical"
    plateau = found["loss_plateau"]
    assert (plateau["anomaly_type"], plateau["severity"]) == ("loss_plateau", "warning")
    assert "optimizer skipped every step" in plateau["message"]


def _first_checkpoint(outcome: Outcome) -> int:
    """The first checkpoint: the early one at step 10 (tracer.core.tracer)."""
    return EARLY_CHECKPOINT_STEP


def _check_deep_sigmoid(outcome: Outcome) -> None:
    first = _first_checkpoint(outcome)
    vanished = {s for step, s in _types_at(outcome, "vanishing_gradient") if step == first}
    assert {"0.weight", "2.weight", "4.weight"} <= vanished  # the early layers
    assert not any(layer.endswith("bias") for layer in vanished)  # biases: see gradient.py
    assert "24.weight" not in vanished  # the output layer learns


def _check_dead_layer(outcome: Outcome) -> None:
    first = _first_checkpoint(outcome)
    assert _types_at(outcome, "dead_layer") == [(first, "aux.bias"), (first, "aux.weight")]
    assert not _types_at(outcome, "vanishing_gradient")  # exact zeros are dead, not vanishing


def _check_memory_leak(outcome: Outcome) -> None:
    # the step-cadence probe's, on the C heap in use where glibc says it (resident memory
    # elsewhere); the 20 ms sampler may report it too
    probe_series = "system/step/heap_in_use_mb" if heap_in_use_reader() else "system/step/rss_mb"
    (leak,) = [
        a
        for a in outcome.online
        if a["anomaly_type"] == "memory_leak" and a["subject"] == probe_series
    ]
    assert "grew steadily" in leak["message"]
    assert leak["step"] - harness.LEAK_STEP <= 100


EXTRA_CHECKS: dict[str, Callable[[Outcome], None]] = {
    "lr_x1000": _check_lr_x1000,
    "nan_batch": _check_nan_batch,
    "inf_loss": _check_inf_loss,
    "corrupt_batches": _check_corrupt_batches,
    "lr_ramp": _check_lr_ramp,
    "lr_zero": _check_lr_zero,
    "frozen": _check_frozen,
    "optimizer_stops": _check_optimizer_stops,
    "deep_sigmoid": _check_deep_sigmoid,
    "dead_layer": _check_dead_layer,
    "memory_leak": _check_memory_leak,
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_is_found_online_and_offline_in_time(name: str) -> None:
    """The fault's expected anomalies are found online and offline, in the step window the
    harness sets (the fault step itself for NaN/Inf, one checkpoint interval for the rest,
    the documented budget for a ramp and a plateau); online and offline find exactly the same
    anomalies; plus the scenario's own checks (see EXTRA_CHECKS)."""
    scenario = FAULTS[name]
    outcome = run_scenario(scenario)
    assert outcome.halted is None
    for fault in scenario.faults:
        for which in ("online", "offline"):
            assert outcome.detected(fault, which), (
                f"{fault.label} at step {fault.step} not found {which} as {fault.expect};"
                f" found:\n{_describe(outcome.anomalies(which))}"
            )
    assert_online_equals_offline(outcome)
    EXTRA_CHECKS[name](outcome)


def test_every_fault_scenario_has_its_own_checks() -> None:
    """No scenario is added to the harness without scenario-specific assertions here."""
    assert set(EXTRA_CHECKS) == set(FAULTS)


@pytest.mark.parametrize("scenario", harness.clean_scenarios(), ids=lambda s: s.name)
def test_clean_run_raises_no_warning_or_critical_anomaly(scenario: harness.Scenario) -> None:
    """A healthy run (noisy small batches, warmup, step decay, system sampled every 50 ms)
    gets no anomaly of severity warning or critical, online or offline; at most an info
    loss_plateau once it converges, and online == offline."""
    outcome = run_scenario(scenario)
    for which in ("online", "offline"):
        assert outcome.serious(which) == [], _describe(outcome.serious(which))
        assert {a["anomaly_type"] for a in outcome.anomalies(which)} <= {"loss_plateau"}
    assert_online_equals_offline(outcome)


@pytest.mark.parametrize("scenario", harness.schedule_scenarios(), ids=lambda s: s.name)
def test_healthy_schedule_raises_no_warning_or_critical_anomaly(
    scenario: harness.Scenario,
) -> None:
    """Constant lr, warmup + cosine, one-cycle, linear decay and cyclic lr, each on a real
    small training at default detector settings: nothing shown by default, online or
    offline (an lr decayed to 0 by its schedule is not a fault)."""
    outcome = run_scenario(scenario)
    for which in ("online", "offline"):
        assert outcome.serious(which) == [], _describe(outcome.serious(which))
    assert_online_equals_offline(outcome)


@pytest.mark.parametrize(
    ("options", "max_extra_steps"),
    [
        ({"write_buffer_size": 1}, None),  # background writer: soon after, bounded in time
        ({"async_writes": False}, 0),  # inline writes: the very step's tracer.step()
    ],
    ids=["async-buffer-1", "sync"],
)
def test_halt_on_nan_stops_training(options: dict[str, Any], max_extra_steps: Any) -> None:
    """With halt_on=["nan_or_inf"], tracer.step() raises TrainingHalted after the NaN batch:
    within 2 s with the background writer flushing every step, at the NaN step itself with
    inline writes. The run is finished as failed with the anomaly in its error, and online
    still equals offline for what was stored."""
    scenario = FAULTS["nan_batch"].replace(
        step_sleep=0.002, tracer_options={**options, "halt_on": ["nan_or_inf"]}
    )
    outcome = run_scenario(scenario)
    assert isinstance(outcome.halted, tracer.TrainingHalted)
    assert outcome.halted_at is not None and outcome.halted_at >= harness.NAN_STEP
    if max_extra_steps is not None:
        assert outcome.halted_at - harness.NAN_STEP <= max_extra_steps
    else:
        assert outcome.halt_time is not None and outcome.fault_time is not None
        assert outcome.halt_time - outcome.fault_time < 2.0
    anomaly = outcome.halted.anomaly
    assert (anomaly["anomaly_type"], anomaly["step"]) == ("nan_or_inf", harness.NAN_STEP)
    assert outcome.run_record["status"] == "failed"
    assert "nan_or_inf" in (outcome.run_record["error"] or "")
    assert ("nan_or_inf", harness.NAN_STEP, "loss") in outcome.keys("online")
    assert_online_equals_offline(outcome)


def _nan_anomaly_checkpoint() -> tuple[CheckpointRecord, list[SampleRecord]]:
    """The NaN scenario, flushed every step; its anomaly checkpoint and samples at the NaN."""
    outcome = run_scenario(
        FAULTS["nan_batch"].replace(steps=160, tracer_options={"write_buffer_size": 1})
    )
    with open_store() as store:
        checkpoints = [
            c
            for c in store.get_checkpoints(outcome.run_id)
            if c["step"] == harness.NAN_STEP and c["reason"] == "anomaly"
        ]
        samples = store.get_samples(outcome.run_id, harness.NAN_STEP)
    assert len(checkpoints) == 1
    return checkpoints[0], samples


def test_anomaly_checkpoint_holds_the_nan_step_metrics_and_batch() -> None:
    """The NaN gets a checkpoint of reason "anomaly" at its own step, with the NaN loss among
    its metrics and the batch of that step (the NaN input value included) as samples."""
    checkpoint, samples = _nan_anomaly_checkpoint()
    assert math.isnan(checkpoint["metrics"]["loss"])
    by_role = {(s["role"], s["name"]): s for s in samples if s["reason"] == "anomaly"}
    assert set(by_role) == {("input", "arg0"), ("output", "output")}
    assert math.isnan(by_role[("input", "arg0")]["values"][0][0])
    assert by_role[("input", "arg0")]["shape"] == [16, 16]


def test_anomaly_checkpoint_holds_per_layer_gradient_norms_at_the_nan_step() -> None:
    """The anomaly checkpoint at the NaN step has every watched layer's gradient norm of that
    step (non-finite, since the NaN reached every layer)."""
    checkpoint, _ = _nan_anomaly_checkpoint()
    stats = checkpoint["gradient_stats"]
    assert {"0.weight", "0.bias", "4.weight"} <= set(stats)
    assert all(not math.isfinite(layer["norm"]) for layer in stats.values())


def test_memory_samples_at_a_repeated_step_count_once_like_storage_keeps_them() -> None:
    """The system sampler is time-based: slow steps get several samples. Storage keeps the
    last one per step, so the memory detector must judge the same, however the stream is cut
    into flushes; else online and offline memory anomalies differ."""
    steps: list[int] = []
    values: list[float] = []
    for index in range(120):
        for repeat in range(3):  # three samples per step: only the last one is stored
            steps.append(index)
            values.append(3000.0 if repeat < 2 and index % 10 == 5 else 1000.0 + 8.0 * index)
    stored_steps = list(range(120))
    stored = [1000.0 + 8.0 * index for index in range(120)]

    def found(pieces: list[tuple[list[int], list[float]]]) -> list[tuple[str, int]]:
        runner = DetectorSet("r", [MemoryDetector()])
        anomalies = []
        for piece_steps, piece_values in pieces:
            points = {"system/process_rss_mb": (piece_steps, piece_values)}
            anomalies += runner.feed(points)
        return [(a["anomaly_type"], a["step"]) for a in anomalies]

    offline = found([(stored_steps, stored)])
    assert offline and offline[0][0] == "memory_leak"
    for size in (1, 2, 5, 7, 100):  # flushes that split a step's samples, or not
        pieces = [(steps[i : i + size], values[i : i + size]) for i in range(0, len(steps), size)]
        assert found(pieces) == offline, size
