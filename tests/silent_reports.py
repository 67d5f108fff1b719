"""What the adapters' silent-bug tests read back: a run's silent-bug reports, its probe series
and its events, from the default store of the test's working directory (tests/conftest.py
gives each test a fresh one)."""

from __future__ import annotations

import inspect
from typing import Any

from tests.core.helpers import open_store
from tracer.detection import replicas, silent, silent_inputs, silent_setup, streaks
from tracer.detection.base import Detector

# Every detector the issue-25 work added (any opt-in one included): a healthy adapter run
# must give none of them cause, so all are on in those tests.
SILENT_DETECTORS = {
    cls.name: cls
    for module in (silent, silent_inputs, silent_setup, streaks, replicas)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, Detector) and cls.__module__ == module.__name__ and cls.name
}
ALL_SILENT_ON = {"detectors": {name: True for name in SILENT_DETECTORS}}
SILENT_TYPES = frozenset(t for cls in SILENT_DETECTORS.values() for t in cls.anomaly_types)


def silent_reports(run_id: str) -> list[dict[str, Any]]:
    """The run's stored anomalies of a silent-bug type, any severity."""
    with open_store() as store:
        return [dict(a) for a in store.get_anomalies(run_id) if a["anomaly_type"] in SILENT_TYPES]


def report_types(run_id: str) -> dict[str, str]:
    """anomaly type -> severity of the run's silent-bug reports (the most severe per type)."""
    found: dict[str, str] = {}
    for report in silent_reports(run_id):
        kind, severity = str(report["anomaly_type"]), str(report["severity"])
        if found.get(kind) != "critical":
            found[kind] = severity
    return found


def probe_steps(run_id: str, prefix: str = "") -> dict[str, list[int]]:
    """The steps of the probe's series `optimizer/lr/0` and `optimizer/update_ratio_median`."""
    with open_store() as store:
        return {
            name: list(store.get_metric_timeseries(run_id, prefix + name)["steps"])
            for name in ("optimizer/lr/0", "optimizer/update_ratio_median")
        }


def events(run_id: str, kind: str) -> list[dict[str, Any]]:
    with open_store() as store:
        return [dict(e) for e in store.get_events(run_id, kind)]
