"""Run rows in PostgreSQL: creating, updating, listing, deleting and rewinding runs.

A run's liveness is its heartbeat (`tracer.storage.liveness`): a pid means nothing on another
host, so a run whose heartbeat stops reads "crashed" wherever it is read. Deleting a run goes
in batches (`tracer_postgres.removal`), so writers of other runs never wait long.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import psycopg
import psycopg.errors

from tracer.exceptions import DuplicateRunError, StorageError
from tracer.storage import RunRecord
from tracer.storage.liveness import effective_status
from tracer_postgres.connection import PostgresConnection
from tracer_postgres.removal import delete_points, rewind

RUN_COLUMNS = (
    "id, project, name, status, tags, notes, config, start_time, end_time, heartbeat,"
    " heartbeat_interval, host, pid, rank, world_size, total_steps, error, settings"
)
_UPDATABLE_RUN_FIELDS = frozenset(
    ("status", "end_time", "heartbeat", "total_steps", "error", "pid", "host", "notes", "rank",
     "world_size")
)  # fmt: skip


def as_json(value: Any) -> str:
    """JSON text with NaN/Infinity allowed (which `jsonb` would refuse)."""
    return json.dumps(value, allow_nan=True, default=str)


class RunTables(PostgresConnection):
    """The run part of the storage interface over `runs` (and, to delete, every table)."""

    _series_ids: dict[tuple[str, str], int]  # set by the backend; cleared on rollback

    def create_run(
        self,
        run_id: str,
        project_name: str,
        run_name: str,
        start_time: float,
        config: Mapping[str, Any],
        *,
        tags: Sequence[str] = (),
        notes: Optional[str] = None,
        host: Optional[str] = None,
        pid: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        heartbeat_interval: Optional[float] = None,
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        row = (
            run_id, project_name, run_name, as_json(list(tags)), notes, as_json(dict(config)),
            start_time, start_time, heartbeat_interval, host, pid, rank, world_size,
            as_json(dict(settings or {})),
        )  # fmt: skip
        try:
            with self._transaction() as connection:
                connection.execute(
                    f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (%s, %s, %s, 'running', %s, %s,"
                    " %s, %s, NULL, %s, %s, %s, %s, %s, %s, 0, NULL, %s)",
                    row,
                )
        except StorageError as error:
            if isinstance(error.__cause__, psycopg.errors.UniqueViolation):
                raise DuplicateRunError(
                    f"a run with id {run_id!r} or name {run_name!r} in project"
                    f" {project_name!r} already exists"
                ) from None
            raise

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._transaction() as connection:
            self._update_run(connection, run_id, fields)

    @staticmethod
    def _update_run(
        connection: psycopg.Connection[Any], run_id: str, fields: Mapping[str, Any]
    ) -> None:
        unknown = set(fields) - _UPDATABLE_RUN_FIELDS
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        if fields:
            assignments = ", ".join(f"{name} = %s" for name in fields)
            connection.execute(
                f"UPDATE runs SET {assignments} WHERE id = %s", (*fields.values(), run_id)
            )

    def get_run(self, run_id: str) -> Optional[RunRecord]:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        return _run_record(rows[0]) if rows else None

    def list_runs(
        self,
        project_name: Optional[str] = None,
        *,
        status: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> list[RunRecord]:
        query = f"SELECT {RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if project_name is not None:
            query += " WHERE project = %s"
            params.append(project_name)
        runs = [_run_record(row) for row in self._read(query + " ORDER BY start_time DESC,"
                                                        " created DESC", params)]  # fmt: skip
        if status is not None:
            runs = [run for run in runs if run["status"] == status]
        if tag is not None:
            runs = [run for run in runs if tag in run["tags"]]
        return runs

    def delete_run(self, run_id: str) -> None:
        """The points go first, in batches of their own short transactions (row locks only,
        so writers of other runs never wait long), then the run and its small rows."""
        series = self._read("SELECT id FROM series WHERE run_id = %s", (run_id,))
        for (series_id,) in series:
            delete_points(self._transaction, series_id)
        with self._transaction() as connection:
            connection.execute(
                "DELETE FROM metric_chunks WHERE series_id IN"
                " (SELECT id FROM series WHERE run_id = %s)",
                (run_id,),
            )  # chunks a late writer added meanwhile
            connection.execute("DELETE FROM runs WHERE id = %s", (run_id,))
        self._series_ids = {k: v for k, v in self._series_ids.items() if k[0] != run_id}

    def rewind_run(self, run_id: str, after_step: int) -> None:
        with self._transaction() as connection:
            rewind(connection, run_id, after_step)


def _run_record(row: Sequence[Any]) -> RunRecord:
    (
        run_id, project, name, status, tags, notes, config, start_time, end_time, heartbeat,
        heartbeat_interval, host, pid, rank, world_size, total_steps, error, settings,
    ) = row  # fmt: skip
    return {
        "run_id": run_id,
        "project_name": project,
        "run_name": name,
        "status": effective_status(
            status, host=host, pid=pid, heartbeat=heartbeat, heartbeat_interval=heartbeat_interval
        ),
        "tags": json.loads(tags),
        "notes": notes,
        "config": json.loads(config),
        "start_time": start_time,
        "end_time": end_time,
        "heartbeat": heartbeat,
        "heartbeat_interval": heartbeat_interval,
        "host": host,
        "pid": pid,
        "rank": rank,
        "world_size": world_size,
        "total_steps": int(total_steps),
        "error": error,
        "settings": json.loads(settings),
    }
