"""The robust statistics under the detectors: the cheap sigma floor never exceeds sigma."""

from __future__ import annotations

import random

import pytest

from tracer.detection.stats import RobustBaseline


def _filled(values: list[float]) -> RobustBaseline:
    baseline = RobustBaseline(window=64, refresh=1, min_count=1)
    for value in values:
        baseline.push(value)
    return baseline


@pytest.mark.parametrize("shape", ["normal", "skewed", "discrete", "outliers", "flat"])
def test_sigma_floor_is_a_lower_bound_of_sigma_for_any_window(shape: str) -> None:
    rng = random.Random(shape)
    draw = {
        "normal": lambda: rng.gauss(3.0, 0.5),
        "skewed": lambda: rng.expovariate(2.0),
        "discrete": lambda: rng.choice([1.0, 2.0, 2.0, 3.0]),
        "outliers": lambda: rng.gauss(0.0, 1.0) * (1e6 if rng.random() < 0.2 else 1.0),
        "flat": lambda: 0.25,
    }[shape]
    for _ in range(3000):
        baseline = _filled([draw() for _ in range(rng.randint(1, 80))])
        floor = baseline.sigma_floor()  # before the MAD is known: the bound itself
        assert floor <= baseline.sigma()  # computes the MAD
        assert baseline.sigma_floor() == baseline.sigma()  # once known, the exact value


def test_sigma_floor_is_close_to_sigma_for_noise_so_it_settles_most_blocks() -> None:
    rng = random.Random(7)
    ratios = []
    for _ in range(500):
        baseline = _filled([rng.gauss(0.0, 1.0) for _ in range(64)])
        ratios.append(baseline.sigma_floor() / baseline.sigma())
    ratios.sort()
    assert ratios[len(ratios) // 2] > 0.8  # the median window: within 20% of the exact sigma


def test_sigma_floor_is_nan_before_the_first_refresh() -> None:
    baseline = RobustBaseline(window=64, refresh=32, min_count=32)
    for value in range(31):
        baseline.push(float(value))
    assert baseline.sigma_floor() != baseline.sigma_floor()
