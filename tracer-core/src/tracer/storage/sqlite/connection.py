"""The SQLite connection under the default backend: opening, schema checks and migration,
and the transactions every write goes through.

WAL lets readers (queries, the CLI) read while runs write; every write is a short
`BEGIN IMMEDIATE` transaction, so DDP ranks and parallel sweeps share one file without
"database is locked". What this connection guarantees in a hostile environment:

- **A file that is not Tracer's is refused untouched.** Tracer's files carry SQLite's
  `application_id` ("TRCR"), set when they are created; a file with another id, or a file
  without one whose tables are not Tracer's, raises `StorageError` before anything is
  written (files from before the id existed are recognised by their schema and stamped).
- **A lock held by another process never blocks for long.** A write waits at most
  `LOCK_WAIT_S` (5 s) for another process's write transaction (a `sqlite3` shell in
  `BEGIN IMMEDIATE`, a stuck process), then raises `StorageError` naming the cause: at
  `tracer.init` that is the error the user sees; during a run the writer keeps the data and
  retries (`tracer.core.writer`).
- **A store removed while in use is rebuilt; one replaced is never written to.** Before each
  write the file's identity (device, inode) is compared with the one opened. When the file
  is gone (`rm -rf` of the storage path), the connection still holds the unlinked file open,
  so it copies it back to the path (`VACUUM INTO`), warns once, and writes there: nothing is
  lost. When another file stands at the path, every write raises `StorageError` and the
  writer reports what it could not write.
- **A read-only store can be read.** When the file or its directory is not writable (a
  read-only mount, an archived run), the connection opens read-only (`mode=ro`, and
  `immutable=1` when SQLite cannot make the WAL index there); a write raises a
  `StorageError` that says the location is read-only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from tracer.exceptions import StorageError, StoreNotFoundError
from tracer.storage.sqlite import schema

logger = logging.getLogger(__name__)

DB_FILENAME = "tracer.db"
LOCK_WAIT_S = 5.0
APPLICATION_ID = 0x54524352  # "TRCR"

# Every connection is made through this name: the fault-injection tests replace it with one
# that returns a connection failing at chosen points (tests/core/faulty_sqlite.py).
connect = sqlite3.connect


def database_path(storage_path: str) -> str:
    """The file a storage_path names: `<dir>/tracer.db`; `sqlite://` prefixes are dropped."""
    if storage_path.lower().startswith("sqlite://"):
        storage_path = storage_path[len("sqlite://") :]
    return os.path.join(os.path.expanduser(storage_path), DB_FILENAME)


def _writable(path: str) -> bool:
    """Whether a connection could write `path` (and its WAL beside it); False on a
    read-only mount even for root."""
    directory = os.path.dirname(path) or "."
    if os.path.exists(path):
        return os.access(path, os.W_OK) and os.access(directory, os.W_OK)
    return True  # created below; a directory that refuses it says so there


def _identity(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


class SQLiteConnection:
    """One thread-safe connection to `<storage_path>/tracer.db`, opened and migrated."""

    def __init__(self, storage_path: str, *, read_only: bool = False) -> None:
        """`read_only`: open read-only even where the file is writable (a reader that must
        never write, as the dashboard); the file must exist then."""
        self.path = database_path(storage_path)
        self._lock = threading.RLock()
        self._closed = False
        self.read_only = read_only or not _writable(self.path)
        if read_only and not os.path.isfile(self.path):
            raise StoreNotFoundError(f"no Tracer database at {self.path}")
        if self.read_only:
            self._conn = self._open_read_only()
        else:
            self._prepare_directory(storage_path)
            self._conn = self._open()
        self._identity = _identity(self.path)
        self._rebuilds = 0

    # -- opening ----------------------------------------------------------------------------
    def _prepare_directory(self, storage_path: str) -> None:
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

    def _open(self) -> sqlite3.Connection:
        """A read-write connection, checked, in WAL mode and migrated."""
        try:
            conn = connect(
                self.path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from error
        try:
            self._check_owner(conn)  # before anything writes to the file
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except sqlite3.DatabaseError as error:
            conn.close()
            if "locked" in str(error) or "busy" in str(error):
                raise self._locked_error(error) from error
            raise StorageError(
                f"{self.path} is not a readable Tracer database ({error}). Tracer leaves it"
                " untouched: move it aside or choose another storage_path."
            ) from error
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        """A read-only connection; `immutable=1` when SQLite cannot set up WAL reading here
        (no -shm file can be made on a read-only mount)."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        error: Optional[sqlite3.Error] = None
        for suffix in ("", "&immutable=1"):
            try:
                conn = connect(
                    uri + suffix, uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as failure:
                error = failure
                continue
            try:
                self._check_owner(conn)
                conn.execute("SELECT count(*) FROM runs").fetchone()
            except StorageError:
                conn.close()
                raise
            except sqlite3.Error as failure:
                conn.close()
                error = failure
                continue
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < schema.SCHEMA_VERSION:
                conn.close()
                raise StorageError(
                    f"{self.path} is opened read-only and has schema version {version}, older"
                    f" than this tracer-core reads ({schema.SCHEMA_VERSION}); open it once"
                    " with a writer (`tracer runs`, where it is writable) to migrate it"
                )
            return conn
        raise StorageError(f"{self.path} is read-only and could not be read: {error}")

    def _check_owner(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not Tracer's, or is from a newer Tracer, before any write.
        Reading the schema makes a file that is not SQLite fail here (DatabaseError)."""
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        owner = conn.execute("PRAGMA application_id").fetchone()[0]
        if owner not in (0, APPLICATION_ID):
            raise StorageError(
                f"{self.path} belongs to another application (SQLite application_id"
                f" {owner:#x}, Tracer's is {APPLICATION_ID:#x}); Tracer leaves it untouched"
            )
        if version > schema.SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this tracer-core"
                f" understands ({schema.SCHEMA_VERSION}); upgrade tracer-core to read it"
            )
        if owner == 0 and tables:
            missing = schema.missing_for(conn, version)
            if version == 0 or missing:
                raise StorageError(
                    f"{self.path} is an SQLite database that Tracer did not create (tables:"
                    f" {', '.join(sorted(tables))}"
                    + (f"; not Tracer's: {missing}" if missing and version else "")
                    + "); Tracer leaves it untouched"
                )

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("SQLite at %s runs in %s mode, not WAL.", self.path, mode)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if (
            conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
            and conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        ):
            return
        with self._begin(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process
            for number in range(version, schema.SCHEMA_VERSION):  # may have migrated it
                schema.MIGRATIONS[number](conn)
                logger.info("Migrated %s to schema version %d.", self.path, number + 1)
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _locked_error(self, error: BaseException) -> StorageError:
        return StorageError(
            f"{self.path} is locked by another process: a write transaction held for over"
            f" {LOCK_WAIT_S:.0f} s (a sqlite3 shell in BEGIN, a long `tracer gc`, a stuck"
            f" process); Tracer stopped waiting ({error})"
        )

    # -- identity -----------------------------------------------------------------------------
    def _check_identity(self) -> None:
        """Before a write: is `self.path` still the file this connection opened?"""
        try:
            current = _identity(self.path)
        except FileNotFoundError:
            self._rebuild()
            return
        if current != self._identity:
            raise StorageError(
                f"{self.path} was replaced by another file while Tracer was writing to it;"
                " Tracer never writes to a file it did not open. Put the original back, or"
                " what this run logs from now on is reported lost at finish."
            )

    def _rebuild(self) -> None:
        """The file was removed while open: copy the unlinked file this connection still
        holds back to its path (nothing is lost), and go on writing there."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._conn.execute("VACUUM INTO ?", (self.path,))
            fresh = self._open()
        except (OSError, sqlite3.Error, StorageError) as error:
            raise StorageError(
                f"{self.path} was removed while Tracer was writing to it, and could not be"
                f" rebuilt there: {error}"
            ) from error
        self._conn.close()
        self._conn = fresh
        self._identity = _identity(self.path)
        self._rebuilds += 1
        self._rolled_back()  # ids cached from the old file still hold, but start clean
        if self._rebuilds == 1:
            logger.warning(
                "Tracer's database %s was removed while in use; Tracer rebuilt it there from"
                " the copy it still had open (nothing lost) and goes on writing to it.",
                self.path,
            )

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def _begin(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` within `LOCK_WAIT_S` (SQLite's busy handler waits; an immediate
        SQLITE_BUSY, as during WAL recovery, is retried until the deadline), then the block,
        then COMMIT; ROLLBACK if the block or the COMMIT raised."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                if time.monotonic() >= deadline:
                    raise self._locked_error(error) from error
                time.sleep(0.05)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that failed (an I/O error, SQLITE_BUSY) can leave the transaction
            # open: without this ROLLBACK every later BEGIN would fail for good.
            self._rolled_back()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (see the module docstring for what it refuses)."""
        with self._lock:
            if self._closed:
                raise StorageError(f"storage {self.path} is closed")
            if self.read_only:
                raise StorageError(
                    f"{self.path} is on a read-only location: Tracer can read it but not"
                    " record a run there; choose a writable storage_path"
                )
            self._check_identity()
            with self._begin(self._conn) as conn:
                yield conn

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
