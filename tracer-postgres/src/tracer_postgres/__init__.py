"""tracer-postgres: Tracer's storage on PostgreSQL, for teams (many jobs and hosts, one store).

Installing the package is enough: its plugin registers `PostgresStorage` for
`postgresql://` (and `postgres://`) locations, so `storage_path="postgresql://host/db"` (or
`TRACER_STORAGE_PATH`, or `--storage` on the `tracer` command) selects it.
"""

from __future__ import annotations

from tracer_postgres.backend import PostgresStorage

__all__ = ["PostgresStorage"]
