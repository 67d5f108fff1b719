"""The anomalies' part of `StorageConformance`: one row per detection episode, written again
as the episode grows (online) or replayed (offline) without a duplicate, its fields (NaN
included) read back as written.

Also the run every test of the suite starts from (`_new_run`).
"""

from __future__ import annotations

import math
import time

from tracer.records import AnomalyWrite
from tracer.storage.base import StorageBackend


def anomaly_row(
    step: int,
    anomaly_type: str = "loss_spike",
    subject: str = "loss",
    run_id: str = "r1",
    **fields: object,
) -> AnomalyWrite:
    anomaly: AnomalyWrite = {
        "run_id": run_id,
        "step": step,
        "anomaly_type": anomaly_type,
        "severity": "warning",
        "subject": subject,
        "value": 9.5,
        "baseline": 1.25,
        "threshold": 8.0,
        "message": f"{anomaly_type} of {subject} at step {step}",
        "detector": "test",
        "end_step": step,
        "count": 1,
        "open": False,
        "hint": "look at the batch",
    }
    anomaly.update(fields)  # type: ignore[typeddict-item]
    return anomaly


class StorageAnomalyConformance:
    """Mixed into `StorageConformance`; its `storage` fixture gives the backend."""

    @staticmethod
    def _new_run(
        storage: StorageBackend,
        run_id: str = "r1",
        project: str = "p",
        name: str = "n1",
        start: float | None = None,
    ) -> None:
        start = time.time() if start is None else start
        storage.create_run(
            run_id,
            project,
            name,
            start,
            {"lr": 0.1},
            tags=["a", "b"],
            notes="note",
            host="host-x",
            pid=None,
            rank=0,
            world_size=1,
            heartbeat_interval=10.0,
        )

    def test_write_anomalies_stores_each_once_and_counts_new(self, storage: StorageBackend) -> None:
        """One anomaly per (run, type, step, subject): writing it again keeps the first's
        identity fields, and the return value counts only the new ones."""
        self._new_run(storage)
        assert storage.write_anomalies([anomaly_row(5), anomaly_row(7)]) == 2
        again = [
            anomaly_row(5, message="rewritten", severity="info"),  # same key: kept as first
            anomaly_row(5, subject="val_loss"),  # another subject: new
            anomaly_row(5, anomaly_type="loss_drop"),  # another type: new
            anomaly_row(7),
        ]
        assert storage.write_anomalies(again) == 2
        assert storage.write_anomalies(again) == 0
        assert storage.write_anomalies([]) == 0
        stored = storage.get_anomalies("r1")
        assert len(stored) == 4
        keys = [(a["step"], a["anomaly_type"], a["subject"]) for a in stored]
        assert sorted(keys) == [
            (5, "loss_drop", "loss"),
            (5, "loss_spike", "loss"),
            (5, "loss_spike", "val_loss"),
            (7, "loss_spike", "loss"),
        ]
        first = stored[keys.index((5, "loss_spike", "loss"))]
        assert (first["message"], first["severity"]) == ("loss_spike of loss at step 5", "warning")

    def test_writing_an_episode_again_updates_its_progress(self, storage: StorageBackend) -> None:
        """An episode stored while open is updated by later writes of the same key: end_step
        and count only grow, open takes the written value, severity only rises; the message
        and hint change only with a rise of severity (they say why it is worse); the value
        stays as first written."""
        self._new_run(storage)
        opened = anomaly_row(5, end_step=5, count=1, open=True, severity="info")
        assert storage.write_anomalies([opened]) == 1
        same = anomaly_row(5, end_step=6, count=2, open=True, severity="info", message="same")
        assert storage.write_anomalies([same]) == 0
        assert storage.get_anomalies("r1")[0]["message"] == opened["message"]
        risen = anomaly_row(
            5, end_step=40, count=12, open=True, severity="critical", message="x", hint="y"
        )
        assert storage.write_anomalies([risen]) == 0
        closed = anomaly_row(5, end_step=41, count=13, open=False, severity="warning", message="z")
        stale = anomaly_row(5, end_step=20, count=3, open=False)  # an older, shorter state
        assert storage.write_anomalies([closed, stale]) == 0
        (stored,) = storage.get_anomalies("r1")
        assert (stored["step"], stored["end_step"], stored["count"], stored["open"]) == (
            5,
            41,
            13,
            False,
        )
        assert (stored["severity"], stored["message"], stored["hint"]) == ("critical", "x", "y")
        assert stored["value"] == opened["value"]

    def test_anomaly_fields_round_trip_nan_included(self, storage: StorageBackend) -> None:
        """Every field reads back as written; NaN value, baseline and threshold read NaN."""
        self._new_run(storage)
        written = anomaly_row(
            3, "nan_or_inf", severity="critical", detector="nan_or_inf", end_step=9, count=4
        )
        nan_fields = anomaly_row(4, "nan_or_inf", value=math.nan, baseline=math.nan)
        nan_fields["threshold"] = math.nan
        storage.write_anomalies([written, nan_fields])
        first, second = storage.get_anomalies("r1")
        assert first == written
        assert math.isnan(second["value"])
        assert math.isnan(second["baseline"])
        assert math.isnan(second["threshold"])
        assert (second["step"], second["message"]) == (4, nan_fields["message"])

    def test_get_anomalies_filters_by_type_in_step_order(self, storage: StorageBackend) -> None:
        """Anomalies come back in step order whatever the write order, only the run's own, and
        only of the types asked for when `anomaly_types` is given."""
        self._new_run(storage)
        self._new_run(storage, run_id="r2", name="n2")
        storage.write_anomalies(
            [
                anomaly_row(30, "nan_or_inf"),
                anomaly_row(10, "loss_spike"),
                anomaly_row(20, "gradient_explosion", subject="grad/global_norm"),
                anomaly_row(5, "nan_or_inf", run_id="r2"),
            ]
        )
        steps = [(a["step"], a["anomaly_type"]) for a in storage.get_anomalies("r1")]
        assert steps == [(10, "loss_spike"), (20, "gradient_explosion"), (30, "nan_or_inf")]
        chosen = storage.get_anomalies("r1", ["nan_or_inf", "gradient_explosion"])
        assert [a["step"] for a in chosen] == [20, 30]
        assert storage.get_anomalies("r1", ["memory_leak"]) == []
        assert all(a["run_id"] == "r1" for a in storage.get_anomalies("r1"))
        assert storage.get_anomalies("missing") == []
