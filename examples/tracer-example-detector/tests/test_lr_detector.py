"""The example detector passes Tracer's detector conformance suite, and finds what it should.

Run after installing the package: `pytest examples/tracer-example-detector/tests`.
"""

from __future__ import annotations

from typing import Any

import pytest
from tracer_example_detector import LearningRateRangeDetector

from tracer.testing import DetectorConformance, DetectorStream


def lr_fault_stream() -> DetectorStream:
    """A warmup, a jump above max_lr for three steps, back in range, then a negative rate."""
    steps = list(range(60))
    lr = [min(1e-3 * (s + 1) / 10, 1e-3) for s in steps]
    lr[30:33] = [5.0, 6.0, 5.0]  # one episode above the range
    lr[45] = -1e-4  # below it
    lr[50] = float("nan")  # nan_or_inf's, not ours
    return DetectorStream(
        series={"lr": (steps, lr), "train/learning_rate": (steps, [2.0] * 60)},
    )


class TestLearningRateRangeConformance(DetectorConformance):
    detector_class = LearningRateRangeDetector
    fault_types = ("lr_out_of_range",)

    def fault_stream(self) -> DetectorStream:
        return lr_fault_stream()


class TestLearningRateRangeSettingsConformance(DetectorConformance):
    """The same suite with non-default settings."""

    detector_class = LearningRateRangeDetector
    fault_types = ("lr_out_of_range",)

    def settings(self) -> dict[str, Any]:
        return {"metrics": ["lr", "lr-*"], "min_lr": 1e-5, "max_lr": 1e-2}

    def fault_stream(self) -> DetectorStream:
        return lr_fault_stream()


def test_each_excursion_is_reported_once_at_its_first_step() -> None:
    stream = lr_fault_stream()
    detector = LearningRateRangeDetector()
    found = []
    for name, (steps, values) in sorted(stream.series.items()):
        found += detector.observe(name, steps, values)
    assert [(f["step"], f["subject"], f["severity"]) for f in found] == [
        (30, "lr", "critical"),
        (45, "lr", "warning"),
        (0, "train/learning_rate", "critical"),
    ]
    assert found[0]["threshold"] == 1.0 and found[0]["baseline"] == 1e-3


def test_which_series_are_watched() -> None:
    default = LearningRateRangeDetector()
    assert default.wants("lr") and default.wants("train/LR") and default.wants("learning_rate")
    assert not default.wants("lr-Adam") and not default.wants("loss")
    assert not default.wants("_lr") and not default.wants("grad/lr")
    lightning = LearningRateRangeDetector({"metrics": "lr-*"})
    assert lightning.wants("lr-Adam") and lightning.wants("lr-Adam/pg1")


def test_bad_settings_fail_early() -> None:
    with pytest.raises(ValueError, match="min_lr"):
        LearningRateRangeDetector({"min_lr": 1.0, "max_lr": 0.1})
    with pytest.raises(ValueError, match="'max_lr'"):
        LearningRateRangeDetector({"max_rl": 0.1})
