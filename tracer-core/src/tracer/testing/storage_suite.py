"""`StorageConformance`: the behaviour every storage backend owes the rest of Tracer.

Subclass it in a pytest module and implement `make_storage(location)`, which opens (or
re-opens) the backend at a location given as a fresh directory; every test below then runs
against that backend. The built-in SQLite backend passes the same suite.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracer.exceptions import DuplicateRunError
from tracer.records import SampleWrite
from tracer.storage.base import StorageBackend
from tracer.testing.storage_anomalies import StorageAnomalyConformance, anomaly_row
from tracer.testing.storage_readers import StorageReaderConformance


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class StorageConformance(StorageReaderConformance, StorageAnomalyConformance):
    """Tests a backend must pass (the readers' part in `storage_readers.py`, the anomalies'
    in `storage_anomalies.py`). Override `make_storage`."""

    def make_storage(self, location: Path) -> StorageBackend:
        raise NotImplementedError("return your backend, stored under `location`")

    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def storage(self, location: Path) -> Iterator[StorageBackend]:
        backend = self.make_storage(location)
        yield backend
        backend.close()

    # -- runs -------------------------------------------------------------------------------
    def test_created_run_reads_back(self, storage: StorageBackend) -> None:
        now = time.time()
        self._new_run(storage, start=now)
        run = storage.get_run("r1")
        assert run is not None
        assert (run["run_id"], run["project_name"], run["run_name"]) == ("r1", "p", "n1")
        assert run["status"] == "running"
        assert run["config"] == {"lr": 0.1}
        assert run["tags"] == ["a", "b"]
        assert run["notes"] == "note"
        assert run["start_time"] == now
        assert run["total_steps"] == 0
        assert storage.get_run("missing") is None

    def test_duplicate_id_or_name_is_refused(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        with pytest.raises(DuplicateRunError):
            self._new_run(storage, run_id="r1", name="other")
        with pytest.raises(DuplicateRunError):
            self._new_run(storage, run_id="r2", name="n1")
        self._new_run(storage, run_id="r3", project="q", name="n1")

    def test_update_run_fields(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.update_run("r1", status="finished", end_time=2000.0, total_steps=42, error=None)
        run = storage.get_run("r1")
        assert run is not None
        assert (run["status"], run["end_time"], run["total_steps"]) == ("finished", 2000.0, 42)

    def test_list_runs_filters_and_orders_newest_first(self, storage: StorageBackend) -> None:
        self._new_run(storage, "r1", "p", "old", start=1.0)
        self._new_run(storage, "r2", "p", "new", start=2.0)
        self._new_run(storage, "r3", "q", "other", start=3.0)
        storage.update_run("r1", status="finished")
        assert [r["run_id"] for r in storage.list_runs("p")] == ["r2", "r1"]
        assert [r["run_id"] for r in storage.list_runs()] == ["r3", "r2", "r1"]
        assert [r["run_id"] for r in storage.list_runs("p", status="finished")] == ["r1"]
        assert [r["run_id"] for r in storage.list_runs(tag="a")] == ["r3", "r2", "r1"]
        assert storage.list_runs(tag="zzz") == []

    def test_names_are_data_not_sql_or_paths(self, storage: StorageBackend) -> None:
        name = "x'; DROP TABLE runs; -- ../../etc/passwd"
        self._new_run(storage, run_id="../r1", project="p'\"", name=name)
        storage.write_metrics("../r1", {name: ([0], [1.0])})
        assert storage.get_run("../r1") is not None
        assert storage.list_runs("p'\"")[0]["run_name"] == name
        assert storage.get_metric_timeseries("../r1", name) == {"steps": [0], "values": [1.0]}

    def test_dead_process_reads_crashed(self, storage: StorageBackend) -> None:
        from tracer.storage.liveness import this_host

        storage.create_run(
            "r1",
            "p",
            "n1",
            time.time(),
            {},
            host=this_host(),
            pid=_dead_pid(),
            heartbeat_interval=10.0,
        )
        run = storage.get_run("r1")
        assert run is not None and run["status"] == "crashed"
        assert [r["run_id"] for r in storage.list_runs("p", status="crashed")] == ["r1"]

    def test_stale_heartbeat_reads_crashed(self, storage: StorageBackend) -> None:
        storage.create_run(
            "r1", "p", "n1", 1000.0, {}, host="elsewhere", pid=1, heartbeat_interval=1.0
        )
        storage.update_run("r1", heartbeat=time.time() - 3600)
        run = storage.get_run("r1")
        assert run is not None and run["status"] == "crashed"
        storage.update_run("r1", heartbeat=time.time())
        run = storage.get_run("r1")
        assert run is not None and run["status"] == "running"

    def test_delete_run_removes_everything(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        self._new_run(storage, run_id="r2", name="n2")
        storage.write_metrics("r1", {"loss": ([0, 1], [1.0, 0.5])})
        storage.write_checkpoint("r1", 1, 1.0, {"loss": 0.5}, {}, {})
        storage.write_anomalies([anomaly_row(1), anomaly_row(1, run_id="r2")])
        storage.delete_run("r1")
        assert storage.get_run("r1") is None
        assert storage.get_metric_timeseries("r1", "loss") == {"steps": [], "values": []}
        assert storage.get_checkpoints("r1") == []
        assert storage.list_metrics("r1") == []
        assert storage.get_anomalies("r1") == []
        assert storage.get_run("r2") is not None
        assert [a["run_id"] for a in storage.get_anomalies("r2")] == ["r2"]

    def test_rewind_drops_what_came_after_the_step(self, storage: StorageBackend) -> None:
        """A run resumed from an earlier checkpoint: what it stored after that step goes.
        Optional for a backend: one that raises NotImplementedError skips this test."""
        self._new_run(storage)
        self._new_run(storage, run_id="r2", name="n2")
        storage.write_metrics("r1", {"loss": (list(range(50)), [float(s) for s in range(50)])})
        storage.write_metrics("r1", {"loss": ([50, 52, 54], [99.0, -5.0, 7.0])})
        storage.write_metrics("r1", {"acc": ([60], [1.0])})
        storage.write_metrics("r2", {"loss": ([60], [1.0])})
        for step in (10, 51, 60):
            storage.write_checkpoint("r1", step, 1.0, {"loss": 1.0}, {}, {})
        storage.write_events("r1", [{"step": s, "kind": "k", "data": {}} for s in (10, 51)])
        storage.write_anomalies([anomaly_row(10, end_step=54), anomaly_row(52, subject="acc")])
        storage.update_run("r1", total_steps=60)
        try:
            storage.rewind_run("r1", 50)
        except NotImplementedError:
            pytest.skip(f"{type(storage).__name__} does not rewind runs (optional)")
        loss = storage.get_metric_timeseries("r1", "loss")
        assert loss["steps"] == list(range(51)) and loss["values"][-1] == 99.0
        assert storage.get_metric_timeseries("r1", "acc")["steps"] == []
        by_name = {m["name"]: m for m in storage.list_metrics("r1")}
        assert sorted(by_name) == ["loss"]
        summary = by_name["loss"]
        assert (summary["count"], summary["last_step"], summary["last_value"]) == (51, 50, 99.0)
        assert (summary["min_value"], summary["max_value"]) == (0.0, 99.0)
        assert [c["step"] for c in storage.get_checkpoints("r1")] == [10]
        assert [e["step"] for e in storage.get_events("r1")] == [10]
        (episode,) = storage.get_anomalies("r1")
        assert (episode["step"], episode["end_step"]) == (10, 50)
        run = storage.get_run("r1")
        assert run is not None and run["total_steps"] == 50
        assert storage.get_metric_timeseries("r2", "loss")["steps"] == [60]  # others untouched
        storage.write_metrics("r1", {"loss": ([51], [0.5])})  # training goes on from there
        assert storage.get_metric_timeseries("r1", "loss")["steps"][-2:] == [50, 51]

    def test_settings_round_trip(self, storage: StorageBackend) -> None:
        """`create_run(settings=...)` comes back in `get_run()["settings"]`; default {}."""
        settings: dict[str, Any] = {
            "detectors": {"loss_spike": {"z_threshold": 6.0}, "memory": False},
            "loss_metrics": ["*loss*", "val/*"],
        }
        storage.create_run("r1", "p", "n1", time.time(), {}, settings=settings)
        self._new_run(storage, run_id="r2", name="n2")  # no settings
        first, second = storage.get_run("r1"), storage.get_run("r2")
        assert first is not None and first["settings"] == settings
        assert second is not None and second["settings"] == {}
        listed = {r["run_id"]: r["settings"] for r in storage.list_runs("p")}
        assert listed == {"r1": settings, "r2": {}}

    # -- metrics ----------------------------------------------------------------------------
    def test_non_finite_values_round_trip_bit_for_bit(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        values = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 0.1]
        storage.write_metrics("r1", {"x": (list(range(len(values))), values)})
        series = storage.get_metric_timeseries("r1", "x")
        assert series["steps"] == list(range(len(values)))
        assert [_bits(v) for v in series["values"]] == [_bits(v) for v in values]

    def test_history_spans_writes_in_step_order(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_metrics("r1", {"loss": ([0, 1, 2], [3.0, 2.0, 1.0]), "lr": ([0], [0.1])})
        storage.write_metrics("r1", {"loss": ([3, 10, 11], [0.5, 0.4, 0.3])})
        storage.write_metrics("r1", {"lr": ([20, 10], [0.3, 0.2])})  # out of order
        assert storage.get_metric_timeseries("r1", "loss") == {
            "steps": [0, 1, 2, 3, 10, 11],
            "values": [3.0, 2.0, 1.0, 0.5, 0.4, 0.3],
        }
        assert storage.get_metric_timeseries("r1", "lr") == {
            "steps": [0, 10, 20],
            "values": [0.1, 0.2, 0.3],
        }
        assert storage.get_metric_timeseries("r1", "nope") == {"steps": [], "values": []}

    def test_metric_arrays_match_the_timeseries(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_metrics("r1", {"loss": ([0, 1, 2], [3.0, math.nan, 1.0])})
        storage.write_metrics("r1", {"loss": ([3, 4], [0.5, 0.25]), "sparse": ([0, 7], [1, 2])})
        storage.write_metrics("r1", {"late": ([9, 5], [1.0, 2.0])})
        for metric in ("loss", "sparse", "late", "missing"):
            series = storage.get_metric_timeseries("r1", metric)
            steps, values = storage.get_metric_arrays("r1", metric)
            assert list(steps) == series["steps"], metric
            assert [_bits(v) for v in values] == [_bits(v) for v in series["values"]], metric

    def test_rewritten_step_keeps_the_latest_value(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_metrics("r1", {"loss": ([0, 1, 2], [3.0, 2.0, 1.0])})
        storage.write_metrics("r1", {"loss": ([1, 2, 3], [9.0, 8.0, 7.0])})  # a resumed job
        assert storage.get_metric_timeseries("r1", "loss") == {
            "steps": [0, 1, 2, 3],
            "values": [3.0, 9.0, 8.0, 7.0],
        }

    def test_metric_summaries(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_metrics("r1", {"loss": ([0, 1], [2.0, math.nan]), "acc": ([0], [0.5])})
        storage.write_metrics("r1", {"loss": ([2], [1.0])})
        by_name = {m["name"]: m for m in storage.list_metrics("r1")}
        assert sorted(by_name) == ["acc", "loss"]
        loss = by_name["loss"]
        assert (loss["count"], loss["last_step"], loss["last_value"]) == (3, 2, 1.0)
        assert (loss["min_value"], loss["max_value"]) == (1.0, 2.0)
        storage.write_metrics("r1", {"acc": ([1], [math.nan])})
        acc = {m["name"]: m for m in storage.list_metrics("r1")}["acc"]
        assert acc["last_step"] == 1 and math.isnan(acc["last_value"])
        assert acc["min_value"] == acc["max_value"] == 0.5

    # -- checkpoints ------------------------------------------------------------------------
    def test_checkpoints_round_trip_in_step_order(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        grads = {"fc.weight": {"norm": math.inf, "mean": 0.0, "num_nans": 3.0}}
        storage.write_checkpoint(
            "r1", 200, 2.0, {"loss": math.nan}, grads, {"cpu": 1.0}, reason="finish"
        )
        storage.write_checkpoint("r1", 100, 1.0, {"loss": 0.5}, {}, {})
        first, second = storage.get_checkpoints("r1")
        assert (first["step"], first["reason"], first["metrics"]) == (
            100,
            "interval",
            {"loss": 0.5},
        )
        assert second["step"] == 200 and second["reason"] == "finish"
        assert math.isnan(second["metrics"]["loss"])
        assert second["gradient_stats"]["fc.weight"]["norm"] == math.inf
        assert second["system_metrics"] == {"cpu": 1.0}

    def test_write_batch_writes_all_parts(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_batch(
            "r1",
            {"loss": ([5], [0.25])},
            [
                {
                    "step": 5,
                    "timestamp": 5.0,
                    "reason": "interval",
                    "metrics": {"loss": 0.25},
                    "gradient_stats": {},
                    "system_metrics": {},
                    "extra": {"probe": {"x": 1}},
                }
            ],
            {"total_steps": 6, "heartbeat": 5.0},
            events=[{"step": 5, "kind": "k", "data": {"a": 1}}],
            samples=[
                {
                    "step": 5,
                    "reason": "interval",
                    "role": "input",
                    "name": "x",
                    "shape": [1, 2],
                    "dtype": "float32",
                    "values": [[1.0, 2.0]],
                    "truncated": False,
                }
            ],
        )
        assert storage.get_metric_timeseries("r1", "loss") == {"steps": [5], "values": [0.25]}
        (checkpoint,) = storage.get_checkpoints("r1")
        assert checkpoint["step"] == 5 and checkpoint["extra"] == {"probe": {"x": 1}}
        assert [e["kind"] for e in storage.get_events("r1")] == ["k"]
        assert [s["name"] for s in storage.get_samples("r1", step=5)] == ["x"]
        run = storage.get_run("r1")
        assert run is not None and run["total_steps"] == 6

    # -- events and samples -----------------------------------------------------------------
    def test_events_round_trip_by_kind_in_step_order(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        storage.write_events(
            "r1",
            [
                {"step": 9, "kind": "nonfinite_gradients", "data": {"layers": ["b", "a"]}},
                {"step": 3, "kind": "optimizer_step_skipped", "data": {}},
                {"step": 3, "kind": "nonfinite_gradients", "data": {"layers": ["c"]}},
            ],
        )
        events = storage.get_events("r1")
        assert [(e["step"], e["kind"]) for e in events] == [
            (3, "optimizer_step_skipped"),
            (3, "nonfinite_gradients"),
            (9, "nonfinite_gradients"),
        ]
        nonfinite = storage.get_events("r1", kind="nonfinite_gradients")
        assert [e["data"]["layers"] for e in nonfinite] == [["c"], ["b", "a"]]
        assert all(e["run_id"] == "r1" for e in events)
        assert storage.get_events("other") == []

    def test_samples_round_trip(self, storage: StorageBackend) -> None:
        self._new_run(storage)
        sample: SampleWrite = {
            "step": 7,
            "reason": "interval",
            "role": "output",
            "name": "logits",
            "shape": [8, 3],
            "dtype": "bfloat16",
            "values": [[0.5, math.inf, -1.0]],
            "truncated": False,
        }
        storage.write_samples(
            "r1",
            [
                sample,
                {
                    **sample,
                    "step": 2,
                    "role": "input",
                    "name": "ids",
                    "values": [[1, 2, 3]],
                },
            ],
        )
        assert [s["step"] for s in storage.get_samples("r1")] == [2, 7]
        (stored,) = storage.get_samples("r1", step=7)
        assert stored["values"] == [[0.5, math.inf, -1.0]] and stored["shape"] == [8, 3]
        assert (stored["role"], stored["dtype"], stored["truncated"]) == (
            "output",
            "bfloat16",
            False,
        )

    # -- lifetime ---------------------------------------------------------------------------
    def test_data_survives_reopening(self, storage: StorageBackend, location: Path) -> None:
        self._new_run(storage)
        storage.write_metrics("r1", {"loss": ([0], [1.5])})
        storage.close()
        storage.close()  # closing twice is harmless
        reopened = self.make_storage(location)
        try:
            assert reopened.get_metric_timeseries("r1", "loss") == {"steps": [0], "values": [1.5]}
        finally:
            reopened.close()
