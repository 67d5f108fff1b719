"""Reading runs back: `QueryEngine` for questions, `AnomalyDetector` for offline detection."""

from __future__ import annotations

from tracer.analysis.anomaly_detector import AnomalyDetector, anomaly_dict
from tracer.analysis.query import QueryEngine

__all__ = ["AnomalyDetector", "QueryEngine", "anomaly_dict"]
