"""The reading side of `StorageConformance`: what the dashboard and other readers of long
histories ask of a backend (a window of a history, anomaly counts of every run at once).

`StorageConformance` includes these tests; a backend that overrides `get_metric_window` or
`anomaly_counts` must agree with the defaults built on the rest of the interface.
"""

from __future__ import annotations

import math
import struct
import time
from bisect import bisect_left, bisect_right

from tracer.records import AnomalyWrite
from tracer.storage.base import StorageBackend


def _run(storage: StorageBackend, run_id: str, project: str) -> None:
    storage.create_run(run_id, project, f"name-{run_id}", time.time(), {})


def _episode(run_id: str, step: int, severity: str, anomaly_type: str) -> AnomalyWrite:
    return {
        "run_id": run_id,
        "step": step,
        "anomaly_type": anomaly_type,
        "severity": severity,
        "subject": "loss",
        "value": 1.0,
        "baseline": 0.5,
        "threshold": 0.9,
        "message": "m",
        "detector": "test",
        "end_step": step,
        "count": 1,
        "open": False,
        "hint": "",
    }


class StorageReaderConformance:
    """Mixed into `StorageConformance`; its `storage` fixture gives the backend."""

    def test_metric_window_is_the_history_cut_to_the_steps(self, storage: StorageBackend) -> None:
        _run(storage, "r1", "p")
        storage.write_metrics("r1", {"x": (list(range(0, 100)), [float(i) for i in range(100)])})
        storage.write_metrics("r1", {"x": ([100, 105, 110], [math.nan, math.inf, 7.0])})
        storage.write_metrics("r1", {"x": ([50, 51], [-1.0, -2.0])})  # a resumed job rewrote
        storage.write_metrics("r1", {"x": (list(range(200, 300, 3)), [2.0] * 34)})
        full = storage.get_metric_timeseries("r1", "x")
        for start, end in (
            (None, None), (0, 299), (10, 60), (50, 50), (99, 106), (101, 104), (150, 160),
            (None, 51), (105, None), (297, 1000), (-5, 0), (400, 500),
        ):  # fmt: skip
            low = 0 if start is None else bisect_left(full["steps"], start)
            high = len(full["steps"]) if end is None else bisect_right(full["steps"], end)
            steps, values = storage.get_metric_window("r1", "x", start, end)
            assert list(steps) == full["steps"][low:high], (start, end)
            expected = [struct.pack("<d", v) for v in full["values"][low:high]]
            assert [struct.pack("<d", v) for v in values] == expected, (start, end)
        assert list(storage.get_metric_window("r1", "missing", 0, 10)[0]) == []

    def test_anomaly_counts_per_run_and_severity(self, storage: StorageBackend) -> None:
        _run(storage, "r1", "p")
        _run(storage, "r2", "q")
        _run(storage, "r3", "p")
        storage.write_anomalies(
            [
                _episode("r1", 5, "critical", "nan_or_inf"),
                _episode("r1", 9, "warning", "loss_spike"),
                _episode("r1", 12, "warning", "loss_spike"),
                _episode("r2", 3, "info", "loss_plateau"),
            ]
        )
        everything = {run: counts for run, counts in storage.anomaly_counts().items() if counts}
        assert everything == {"r1": {"critical": 1, "warning": 2}, "r2": {"info": 1}}
        of_p = {run: counts for run, counts in storage.anomaly_counts("p").items() if counts}
        assert of_p == {"r1": {"critical": 1, "warning": 2}}
