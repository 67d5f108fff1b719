"""The detectors that ship with tracer-core, in the order they run; registered by
`tracer.plugins.builtins`."""

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
from tracer.detection.replicas import ReplicaDivergenceDetector
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
    ReplicaDivergenceDetector,
    # silent bugs (README "What Tracer checks for silent bugs")
    FrozenModelDetector,
    ParametersOutsideOptimizerDetector,
    ParametersNotUpdatedDetector,
    SkippedStepsDetector,
    GradientsNotResetDetector,
    TrainingModeDetector,
    RepeatedBatchDetector,
    TrainingWarningDetector,
    WeightScaleDetector,
    NormWeightDecayDetector,
)
