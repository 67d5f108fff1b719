"""The module the `tracer.plugins` entry point names: Tracer imports it when it first needs
detectors (the first `tracer.init` or `AnomalyDetector`) and calls the hook below."""

from __future__ import annotations

import tracer
from tracer.plugins.hookspecs import RegisterDetector
from tracer_example_detector.detector import LearningRateRangeDetector


@tracer.hookimpl
def tracer_register_detectors(register: RegisterDetector) -> None:
    """Called once per process; makes "lr_out_of_range" a detector every run gets."""
    register(LearningRateRangeDetector)
