"""`PostgresStorage`: Tracer's storage interface on PostgreSQL, for `postgresql://` locations.

Many processes on many hosts write one database at once: each run is written by its own
process (rank 0 of its job), rows are keyed by run, and every write is one short transaction
(row locks only). The interface is assembled from one base per purpose: the connection pool
(`connection.py`), runs (`runs.py`), metric histories (`metrics.py`), and what a run records
besides metrics (`step_records.py`); this module opens the location and writes a flush.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import psycopg

from tracer import TracerConfig
from tracer.exceptions import StorageError
from tracer.storage import StorageBackend
from tracer.storage.base import AnomalyWrite, CheckpointWrite, EventWrite, PointBatch, SampleWrite
from tracer_postgres import location as locations
from tracer_postgres.metrics import MetricTables
from tracer_postgres.runs import RunTables
from tracer_postgres.step_records import StepRecordTables

logger = logging.getLogger(__name__)


class PostgresStorage(RunTables, StepRecordTables, MetricTables, StorageBackend):
    """PostgreSQL storage at one `postgresql://` location; thread-safe (a connection pool)."""

    def __init__(self, config: Union[TracerConfig, str], *, read_only: bool = False) -> None:
        """`config`: a run's config, or only the location URL; `read_only`: check and read,
        never create or migrate anything (the dashboard's way)."""
        url = config if isinstance(config, str) else config.storage_path
        try:
            where = locations.parse(url)
        except ValueError as error:
            raise StorageError(str(error)) from None
        self._series_ids: dict[tuple[str, str], int] = {}
        self._in_doubt: Optional[tuple[str, int, str]] = None  # (run, batch id, token)
        super().__init__(where, read_only=read_only)

    @classmethod
    def from_location(cls, location: str) -> StorageBackend:
        if cls.__init__ is not PostgresStorage.__init__:  # a subclass's own __init__
            return super().from_location(location)
        return cls(location)

    @classmethod
    def open_reader(cls, location: str) -> StorageBackend:
        if cls.__init__ is not PostgresStorage.__init__:
            return super().open_reader(location)
        return cls(location, read_only=True)

    def _rolled_back(self, error: BaseException) -> None:
        self._series_ids.clear()  # series created in the rolled-back transaction are gone

    # -- batching ---------------------------------------------------------------------------
    def write_batch(
        self,
        run_id: str,
        points: PointBatch,
        checkpoints: Sequence[CheckpointWrite] = (),
        run_fields: Optional[Mapping[str, Any]] = None,
        events: Sequence[EventWrite] = (),
        samples: Sequence[SampleWrite] = (),
        anomalies: Sequence[AnomalyWrite] = (),
    ) -> None:
        """One writer flush in one transaction: all of it lands, or none of it.

        Each flush leaves a token in `flushes`. When a COMMIT's answer is lost (the server
        went away while committing), the writer retries the same batch; if its token is
        stored, the first attempt landed, and the batch is not written twice."""
        if self._in_doubt is not None and self._in_doubt[:2] == (run_id, id(points)):
            token = self._in_doubt[2]
            stored = self._read("SELECT token FROM flushes WHERE run_id = %s", (run_id,))
            self._in_doubt = None
            if stored and stored[0][0] == token:
                logger.info("A flush whose commit was in doubt had landed; not written again.")
                return
        token = uuid.uuid4().hex
        try:
            with self._transaction() as connection:
                if anomalies:
                    self._write_anomalies(connection, anomalies)
                if points:
                    self._write_metrics(connection, run_id, points)
                if checkpoints:
                    self._write_checkpoints(connection, run_id, checkpoints)
                if events:
                    self._write_events(connection, run_id, events)
                if samples:
                    self._write_samples(connection, run_id, samples)
                if run_fields:
                    self._update_run(connection, run_id, run_fields)
                connection.execute(
                    "INSERT INTO flushes (run_id, token) SELECT id, %s FROM runs WHERE id = %s"
                    " ON CONFLICT (run_id) DO UPDATE SET token = EXCLUDED.token",
                    (token, run_id),
                )
        except StorageError as error:
            if isinstance(error.__cause__, psycopg.OperationalError):
                self._in_doubt = (run_id, id(points), token)  # it may have committed
            raise
