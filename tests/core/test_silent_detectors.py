"""The silent-bug detectors pass the conformance suite (findings' shape, online = offline
however the stream is cut, NaN/inf and unrelated data never raise), and each says what it
saw and what to try. `test_detector_conformance.py` checks every built-in has a class here
or there."""

from __future__ import annotations

from typing import Any

from tracer.detection.silent import (
    FrozenModelDetector,
    GradientsNotResetDetector,
    ParametersNotUpdatedDetector,
    ParametersOutsideOptimizerDetector,
)
from tracer.detection.silent_inputs import RepeatedBatchDetector, TrainingModeDetector
from tracer.detection.silent_setup import (
    NormWeightDecayDetector,
    TrainingWarningDetector,
    WeightScaleDetector,
)
from tracer.detection.streaks import SkippedStepsDetector
from tracer.testing import DetectorConformance, DetectorStream, make_event


def update(step: int, **data: Any) -> Any:
    base: dict[str, Any] = {
        "model": "Net",
        "unchanged": {},
        "outside_optimizer": [],
        "outside_streak": 0,
        "with_grad": 4,
        "in_optimizer": 4,
        "lrs": [0.001],
        "eval_streak": 0,
        "repeated_batch_streak": 0,
        "interval": 10,
    }
    return make_event(step, "optimizer_update", {**base, **data})


def feed(detector: Any, stream: DetectorStream) -> list[Any]:
    found = []
    for event in stream.events:
        found += detector.observe_event(event)
    for series, (steps, values) in stream.series.items():
        if detector.wants(series):
            found += detector.observe(series, steps, values)
    return found + detector.finish()


class TestParametersNotUpdated(DetectorConformance):
    detector_class = ParametersNotUpdatedDetector
    fault_types = ("parameters_not_updated",)

    def fault_stream(self) -> DetectorStream:
        streaks = [{"head.weight": n} for n in (1, 2, 3, 4)]
        return DetectorStream(
            events=[update(10 * i, unchanged=s, lrs=[0.0]) for i, s in enumerate(streaks)]
        )


def test_every_parameter_unchanged_is_critical_and_names_the_lr() -> None:
    events = [
        update(10 * i, unchanged={"a.weight": i + 1, "b.weight": i + 1}, in_optimizer=2, lrs=[0.0])
        for i in range(3)
    ]
    found = feed(ParametersNotUpdatedDetector(), DetectorStream(events=events))
    assert [(f["severity"], f["step"]) for f in found][:1] == [("critical", 20)]
    assert "lr: 0" in found[0]["message"] and "scheduler" in found[0]["hint"]


class TestParametersOutsideOptimizer(DetectorConformance):
    detector_class = ParametersOutsideOptimizerDetector
    fault_types = ("parameters_outside_optimizer",)

    def fault_stream(self) -> DetectorStream:
        return DetectorStream(
            events=[update(0, outside_optimizer=["head.weight", "head.bias"], in_optimizer=2)]
        )


def test_an_optimizer_of_another_copy_is_critical() -> None:
    event = update(0, outside_optimizer=["a.weight", "b.weight"], in_optimizer=0)
    found = feed(ParametersOutsideOptimizerDetector(), DetectorStream(events=[event]))
    assert found[0]["severity"] == "critical" and "copy" in found[0]["hint"]


class TestFrozenModel(DetectorConformance):
    detector_class = FrozenModelDetector
    fault_types = ("frozen_model",)

    def fault_stream(self) -> DetectorStream:
        data = {"model": "Net", "trainable_matrices": 0, "frozen_matrices": 5}
        return DetectorStream(
            events=[make_event(0, "gradient_capture", {**data, "trainable_vectors": 4})]
        )


def test_a_frozen_backbone_under_a_trainable_head_is_no_frozen_model() -> None:
    data = {"trainable_matrices": 1, "frozen_matrices": 5, "trainable_vectors": 1}
    event = make_event(0, "gradient_capture", data)
    assert feed(FrozenModelDetector(), DetectorStream(events=[event])) == []


class TestTrainingMode(DetectorConformance):
    detector_class = TrainingModeDetector
    fault_types = ("eval_mode_training", "evaluation_in_train_mode", "dropout_in_eval")

    def fault_stream(self) -> DetectorStream:
        return DetectorStream(
            events=[
                make_event(49, "evaluation_in_train_mode", {"model": "Net"}),
                *[update(50 + 10 * i, eval_streak=i + 1) for i in range(3)],
                make_event(99, "dropout_in_eval", {"model": "Net", "function": "dropout"}),
            ]
        )


class TestRepeatedBatch(DetectorConformance):
    detector_class = RepeatedBatchDetector
    fault_types = ("repeated_batch",)

    def fault_stream(self) -> DetectorStream:
        loaders = [{"batches": 30, "batch_size": 32}]
        return DetectorStream(
            events=[
                update(10 * i, repeated_batch_streak=i, batch_rows=32, loaders=loaders)
                for i in range(1, 4)
            ]
        )


def test_a_repeated_batch_without_a_loader_of_more_batches_is_full_batch_training() -> None:
    """The whole dataset at each step (no DataLoader, a loader of one batch, or a loader of
    other batches such as a validation loader) is not a repeated batch."""
    for loaders in ([], [{"batches": 1, "batch_size": 512}], [{"batches": 8, "batch_size": 64}]):
        events = [
            update(10 * i, repeated_batch_streak=i, batch_rows=512, loaders=loaders)
            for i in range(1, 6)
        ]
        assert feed(RepeatedBatchDetector(), DetectorStream(events=events)) == []


class TestTrainingWarning(DetectorConformance):
    detector_class = TrainingWarningDetector
    fault_types = ("training_warning",)

    def fault_stream(self) -> DetectorStream:
        data = {
            "bug": "loss_broadcast",
            "message": "Using a target size that is different to the input size",
            "where": "train.py:12",
        }
        return DetectorStream(events=[make_event(0, "training_warning", data)])


class TestWeightScale(DetectorConformance):
    detector_class = WeightScaleDetector
    fault_types = ("weight_scale",)

    def fault_stream(self) -> DetectorStream:
        layers = {"fc1.weight": 17.3, "fc2.weight": 0.02}
        return DetectorStream(
            events=[make_event(0, "weight_scale", {"model": "Net", "layers": layers})]
        )


def test_a_small_or_zero_init_is_no_weight_scale_report() -> None:
    event = make_event(0, "weight_scale", {"model": "Net", "layers": {"lora_b": 0.0}})
    assert feed(WeightScaleDetector(), DetectorStream(events=[event])) == []


class TestNormWeightDecay(DetectorConformance):
    detector_class = NormWeightDecayDetector
    fault_types = ("norm_weight_decay",)

    def fault_stream(self) -> DetectorStream:
        data = {"model": "Net", "weight_decay": 0.1, "optimizer": "AdamW"}
        return DetectorStream(events=[make_event(0, "norm_weight_decay", data)])


class TestSkippedSteps(DetectorConformance):
    detector_class = SkippedStepsDetector
    fault_types = ("skipped_steps",)

    def fault_stream(self) -> DetectorStream:
        steps = [3, 4, 5, *range(30, 60)]  # a short streak (a scaler calibrating), a long one
        return DetectorStream(series={"optimizer/skipped_step": (steps, [1.0] * len(steps))})


def test_a_scaler_calibrating_for_a_few_steps_is_no_report() -> None:
    steps = list(range(12))
    stream = DetectorStream(series={"optimizer/skipped_step": (steps, [1.0] * 12)})
    assert feed(SkippedStepsDetector(), stream) == []


class TestGradientsNotReset(DetectorConformance):
    detector_class = GradientsNotResetDetector
    fault_types = ("gradients_not_reset",)

    def fault_stream(self) -> DetectorStream:
        streaks = [0, 1, 2, 3]
        return DetectorStream(
            events=[
                update(10 * i, not_reset_streak=n, reset_gap=4.0) for i, n in enumerate(streaks)
            ]
        )


def test_one_sample_of_gradients_not_reset_is_not_yet_a_report() -> None:
    events = [update(10, not_reset_streak=1, reset_gap=0.5), update(20, not_reset_streak=0)]
    assert feed(GradientsNotResetDetector(), DetectorStream(events=events)) == []
