"""An example Tracer plugin: the `lr_out_of_range` detector.

Installing the package is all it takes: its `tracer.plugins` entry point registers the
detector, and every run then reports a learning rate outside [min_lr, max_lr], online while
it trains and offline through `tracer.analysis.AnomalyDetector`.
"""

from __future__ import annotations

from tracer_example_detector.detector import LearningRateRangeDetector

__version__ = "0.1.0"

__all__ = ["LearningRateRangeDetector"]
