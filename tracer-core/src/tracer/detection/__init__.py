"""Anomaly detection: the detector interface, the built-in detectors and the runner.

Write a detector by subclassing `Detector` and registering it through the
`tracer_register_detectors` hook; `tracer.testing.DetectorConformance` checks it.
"""

from __future__ import annotations

from tracer.detection.base import Detector, DetectorContext, Finding, finding

__all__ = ["Detector", "DetectorContext", "Finding", "finding"]
