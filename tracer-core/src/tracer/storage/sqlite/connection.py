"""The SQLite connection under the default backend: opening, schema checks and migration,
and the transactions every write goes through.

WAL lets readers (queries, the CLI) read while runs write; every write is a short
`BEGIN IMMEDIATE` transaction with a long busy timeout, so DDP ranks and parallel sweeps share
one file without "database is locked". A file that is not Tracer's is refused untouched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tracer.exceptions import StorageError
from tracer.storage.sqlite import schema

logger = logging.getLogger(__name__)

DB_FILENAME = "tracer.db"
BUSY_TIMEOUT_MS = 60_000
_LOCKED_RETRIES = 20


def database_path(storage_path: str) -> str:
    """The file a storage_path names: `<dir>/tracer.db`; `sqlite://` prefixes are dropped."""
    if storage_path.lower().startswith("sqlite://"):
        storage_path = storage_path[len("sqlite://") :]
    return os.path.join(os.path.expanduser(storage_path), DB_FILENAME)


class SQLiteConnection:
    """One thread-safe connection to `<storage_path>/tracer.db`, opened and migrated."""

    def __init__(self, storage_path: str) -> None:
        self.path = database_path(storage_path)
        directory = os.path.dirname(self.path)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise StorageError(
                f"storage_path {storage_path!r} is a file; Tracer needs a directory"
                f" there to keep {DB_FILENAME} in"
            )
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create storage_path {storage_path!r}: {error}") from error
        self._lock = threading.RLock()
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from error
        try:
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._conn.close()
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise StorageError(f"{self.path} stayed locked: {error}") from error
            raise StorageError(
                f"{self.path} is not a readable Tracer database ({error}). Tracer leaves it"
                " untouched: move it aside or choose another storage_path."
            ) from error
        except BaseException:
            self._conn.close()
            raise

    # -- connection and schema ------------------------------------------------------------
    def _configure(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._refuse_foreign_or_newer_file()  # before anything writes to the file
        for attempt in range(_LOCKED_RETRIES):
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == _LOCKED_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if str(mode).lower() != "wal":
            logger.warning("SQLite at %s runs in %s mode, not WAL.", self.path, mode)
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _refuse_foreign_or_newer_file(self) -> None:
        # Reading the schema makes a file that is not SQLite fail here (DatabaseError).
        tables = {
            row[0]
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > schema.SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this tracer-core"
                f" understands ({schema.SCHEMA_VERSION}); upgrade tracer-core to read it"
            )
        if version == 0 and tables:
            raise StorageError(
                f"{self.path} is an SQLite database that Tracer did not create"
                f" (tables: {', '.join(sorted(tables))}); Tracer leaves it untouched"
            )

    def _migrate(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION:
            return
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process
            for number in range(version, schema.SCHEMA_VERSION):  # may have migrated it
                schema.MIGRATIONS[number](conn)
                logger.info("Migrated %s to schema version %d.", self.path, number + 1)
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; waits for other writers (busy timeout) instead of failing."""
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            for attempt in range(_LOCKED_RETRIES):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or attempt == _LOCKED_RETRIES - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            try:
                yield self._conn
            except BaseException:
                self._rolled_back()
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            return self._conn.execute(sql, params).fetchall()

    def _rolled_back(self) -> None:
        """A write transaction was rolled back: forget anything cached from inside it."""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
