"""The reading side of `StorageConformance`: what the dashboard and other readers of long
histories ask of a backend (a window of a history, anomaly counts of every run at once).

`StorageConformance` includes these tests; a backend that overrides `get_metric_window`,
`get_metric_reduced` or `anomaly_counts` must agree with the defaults built on the rest of the
interface, bit for bit (NaN, +-Inf and -0.0 included).
"""

from __future__ import annotations

import math
import random
import struct
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any, Optional

from tracer.records import AnomalyWrite
from tracer.storage.base import StorageBackend
from tracer.storage.reduction import Reduced, reduce_points


def _run(storage: StorageBackend, run_id: str, project: str) -> None:
    storage.create_run(run_id, project, f"name-{run_id}", time.time(), {})


def _bits(values: Sequence[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def _comparable(reduced: Reduced) -> tuple[Any, ...]:
    return (
        list(reduced.steps), _bits(reduced.values), _bits(reduced.mins), _bits(reduced.maxs),
        list(reduced.indices), reduced.count, reduced.reduced, list(reduced.nonfinite),
    )  # fmt: skip


def _awkward_history(storage: StorageBackend, run_id: str) -> None:
    """About 7,000 points of "x" written in flushes of many sizes, with every case the rule
    must get right: NaN and +-Inf (alone and in stretches), ties of the lowest and highest
    value (the first one is kept), 0.0 beside -0.0, values whose sum overflows, a stretch of
    uneven steps, single-point flushes, and steps written again (a resumed job)."""
    rng = random.Random(23)
    step = 0
    sizes = [1, 1, 7, 300, 1000, 3, 256, 257, 511, 2000, 5, 64, 900, 1, 1200]
    for size in sizes:
        stride = 3 if size == 511 else 1
        steps = [step + stride * i for i in range(size)]
        if size == 257:
            steps = sorted(rng.sample(range(step, step + 4 * size), size))
        values = [rng.choice((1.0, 2.0, 0.5)) * rng.random() for _ in steps]
        for i in range(0, size, 97):
            values[i] = rng.choice((math.nan, math.inf, -math.inf, 5.0, -5.0, 0.0, -0.0))
        if size == 2000:
            values[100:140] = [math.nan] * 40
            values[700:703] = [1e308, 1e308, -1e308]
        storage.write_metrics(run_id, {"x": (steps, values)})
        step = steps[-1] + 1
    storage.write_metrics(run_id, {"x": (list(range(1500, 1600)), [-7.0] * 100)})  # rewritten
    storage.write_metrics(run_id, {"x": ([3000, 3001], [math.nan, 99.0])})


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

    def test_metric_reduced_is_the_window_reduced(self, storage: StorageBackend) -> None:
        _run(storage, "r1", "p")
        _awkward_history(storage, "r1")
        rng = random.Random(5)
        steps = list(storage.get_metric_window("r1", "x")[0])
        windows: list[tuple[Optional[int], Optional[int]]] = [
            (None, None), (0, None), (None, 3000), (1500, 1599), (2999, 3002), (-10, 2),
            (steps[-1], None), (steps[-1] + 1, None), (None, -1),
        ]  # fmt: skip
        for _ in range(40):
            low, high = sorted(rng.sample(range(-5, steps[-1] + 5), 2))
            windows.append((low, high))
        for start, end in windows:
            window_steps, window_values = storage.get_metric_window("r1", "x", start, end)
            for points in (2, 3, 10, 41, 400, 1000, 20_000):
                expected = reduce_points(window_steps, window_values, points)
                got = storage.get_metric_reduced("r1", "x", start, end, points)
                assert _comparable(got) == _comparable(expected), (start, end, points)
        empty = storage.get_metric_reduced("r1", "missing")
        assert (empty.count, empty.steps) == (0, [])

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

    def test_metric_histories_stream_whole_histories_in_order(
        self, storage: StorageBackend
    ) -> None:
        """`iter_metric_histories` (the frame API's read): runs in the order asked, then
        `_timestamp`, then metrics by name; each history equals `get_metric_arrays`, bit for
        bit, chunks rewritten by a resumed run included; a metric filter; unknown runs and
        metrics are skipped."""
        _run(storage, "r1", "p")
        _run(storage, "r2", "p")
        special = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
        storage.write_metrics(
            "r1",
            {
                "loss": (list(range(6)), special),
                "_timestamp": (list(range(6)), [100.0 + i for i in range(6)]),
                "Acc": ([0, 5], [0.5, 0.6]),
            },
        )
        storage.write_metrics("r1", {"loss": ([2, 6, 9], [7.0, 8.0, 9.0])})  # a rewrite
        storage.write_metrics("r2", {"b": (list(range(0, 30, 3)), [1.0] * 10)})
        storage.write_metrics("r2", {"a": ([4], [2.0])})
        found = list(storage.iter_metric_histories(["r2", "r1", "missing"]))
        assert [(h.run_id, h.metric) for h in found] == [
            ("r2", "a"), ("r2", "b"), ("r1", "_timestamp"), ("r1", "Acc"), ("r1", "loss"),
        ]  # fmt: skip
        for history in found:
            steps, values = storage.get_metric_arrays(history.run_id, history.metric)
            assert list(history.steps) == list(steps)
            packed = [struct.pack("<d", v) for v in history.values]
            assert packed == [struct.pack("<d", v) for v in values]
        loss = found[-1]
        assert list(loss.steps) == [0, 1, 2, 3, 4, 5, 6, 9]
        assert struct.pack("<d", loss.values[2]) == struct.pack("<d", 7.0)
        only = list(storage.iter_metric_histories(["r1", "r2"], ["loss", "a", "nothing"]))
        assert [(h.run_id, h.metric) for h in only] == [("r1", "loss"), ("r2", "a")]
        assert list(storage.iter_metric_histories([])) == []

    def test_metric_summaries_and_events_of_every_run(self, storage: StorageBackend) -> None:
        """The runs table's reads: `metric_summaries` and `events_by_run` agree with
        `list_metrics` and `get_events` run by run, of every run or one project's."""
        _run(storage, "r1", "p")
        _run(storage, "r2", "q")
        _run(storage, "r3", "p")
        storage.write_metrics("r1", {"loss": ([0, 1], [1.0, math.nan]), "acc": ([1], [0.5])})
        storage.write_metrics("r2", {"loss": ([0], [3.0])})
        storage.write_events("r1", [{"step": 1, "kind": "summary", "data": {"best": 0.5}}])
        storage.write_events("r1", [{"step": 0, "kind": "other", "data": {}}])
        storage.write_events("r2", [{"step": 4, "kind": "summary", "data": {"x": "y"}}])
        for project in (None, "p"):
            runs = [r["run_id"] for r in storage.list_runs(project)]
            summaries = storage.metric_summaries(project)
            for run_id in runs:
                expected = storage.list_metrics(run_id)
                got = summaries.get(run_id, [])
                assert [m["name"] for m in got] == [m["name"] for m in expected]
                for mine, theirs in zip(got, expected, strict=True):
                    assert struct.pack("<d", mine["last_value"]) == struct.pack(
                        "<d", theirs["last_value"]
                    )
                    assert (mine["count"], mine["last_step"]) == (
                        theirs["count"],
                        theirs["last_step"],
                    )
            assert set(summaries) <= set(runs)
            events = storage.events_by_run("summary", project)
            assert {run: len(found) for run, found in events.items() if found} == {
                run_id: len(storage.get_events(run_id, "summary"))
                for run_id in runs
                if storage.get_events(run_id, "summary")
            }
        assert storage.events_by_run("summary", "p")["r1"][0]["data"] == {"best": 0.5}
