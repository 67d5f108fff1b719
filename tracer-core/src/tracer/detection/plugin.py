"""Registers the built-in detectors."""

from __future__ import annotations

from tracer.detection.gradient import (
    DeadLayerDetector,
    GradientExplosionDetector,
    VanishingGradientDetector,
)
from tracer.detection.loss import LossDivergenceDetector, LossSpikeDetector
from tracer.detection.memory import MemoryDetector
from tracer.detection.nonfinite import NanOrInfDetector
from tracer.detection.plateau import LossPlateauDetector
from tracer.detection.ranks import RankDivergenceDetector
from tracer.plugins.hookspecs import RegisterDetector, hookimpl

BUILTIN_DETECTORS = (
    NanOrInfDetector,
    GradientExplosionDetector,
    VanishingGradientDetector,
    DeadLayerDetector,
    LossSpikeDetector,
    LossDivergenceDetector,
    LossPlateauDetector,
    MemoryDetector,
    RankDivergenceDetector,
)


@hookimpl
def tracer_register_detectors(register: RegisterDetector) -> None:
    for detector in BUILTIN_DETECTORS:
        register(detector)
