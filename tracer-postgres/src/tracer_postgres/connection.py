"""The connections under `PostgresStorage`: opening (with errors that say what is wrong), the
pool, and the transactions and reads every method goes through.

- **Opening checks first.** One direct connection is made before the pool: a server that is
  down, a wrong password or a missing database raises `StorageError` naming the location (its
  password masked) and the cause in one line, never a traceback from inside psycopg. Then the
  schema is checked (a database that is not Tracer's is refused untouched) and migrated; a
  reader (`read_only`) migrates nothing and finds `StoreNotFoundError` where nothing was
  recorded yet.
- **A restarted server is reconnected to.** Connections come from a `psycopg_pool` pool that
  checks each one before handing it out, so after a restart the next transaction gets a fresh
  connection. A transaction that fails raises `StorageError`; the run's writer keeps the batch
  and retries it (`tracer.core.writer`), and reports at finish what it could not write.
- **Never an endless wait.** Getting a connection waits at most `CONNECT_WAIT_S`; connecting
  at most `CONNECT_TIMEOUT_S` (unless the URL sets `connect_timeout`).
- **Closed at exit.** A store nobody closed (a notebook's `QueryEngine`, a script that ends)
  has its pool closed by an `atexit` hook, while the interpreter still runs the pool's
  threads; closed later, at teardown, the pool could only log that it couldn't stop them.
  The hook is registered when this module is imported, which is when Tracer's plugin manager
  loads this package, before any run starts; atexit runs hooks last-registered first, so
  Tracer's own hook (which finishes runs nobody finished, writing through their stores) has
  run by the time this one closes the pools.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Optional

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg import sql

from tracer.config import mask_password
from tracer.exceptions import StorageError, StoreNotFoundError
from tracer_postgres import schema
from tracer_postgres.location import Location

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
CONNECT_WAIT_S = 5.0
POOL_SIZE = 4  # the training thread, the writer thread, and a reader's few threads

_open: weakref.WeakSet[PostgresConnection] = weakref.WeakSet()  # closed at exit if still open


@atexit.register
def _close_at_exit() -> None:
    for connection in list(_open):
        try:
            connection.close()
        except Exception:  # the interpreter is ending: nothing to report to
            logger.debug("closing %r at exit failed", connection, exc_info=True)


def describe(error: BaseException, location: Location) -> str:
    """One line saying why `error` happened at `location`, password masked."""
    text = mask_password(str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"{location.shown}: the server refused the password ({text}); the password comes"
            " from the URL, PGPASSWORD or ~/.pgpass"
        )
    if "does not exist" in lowered and "database" in lowered:
        return f"{location.shown}: {text}; create it (createdb) or fix the URL"
    if isinstance(error, psycopg.OperationalError):
        return f"cannot reach PostgreSQL at {location.shown}: {text}"
    return f"{location.shown}: {text}"


class PostgresConnection:
    """A pool of connections to one location, its schema checked (and migrated unless
    `read_only`)."""

    def __init__(self, location: Location, *, read_only: bool = False) -> None:
        self.location = location
        self.read_only = read_only
        self._closed = False
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in location.conninfo:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        self._connect_kwargs = kwargs
        self._prepare()
        self._pool = psycopg_pool.ConnectionPool(
            location.conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=POOL_SIZE,
            configure=self._configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=CONNECT_WAIT_S,
            name=f"tracer {location.shown}",
            open=False,
        )
        self._pool.open(wait=False)
        _open.add(self)

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.location.conninfo, **self._connect_kwargs)
        except psycopg.Error as error:
            raise StorageError(describe(error, self.location)) from None

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        """Every pooled connection: Tracer's schema first on the search path."""
        if self.location.schema is not None:
            connection.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self.location.schema))
            )

    def _prepare(self) -> None:
        """Check the server and the schema on one direct connection (migrate it unless
        reading only), so every failure to open is one clear `StorageError`."""
        connection = self._connect()
        try:
            if self.location.schema is not None:
                if not self.read_only:
                    self._create_schema(connection, self.location.schema)
                self._configure(connection)
            if self.read_only:
                with connection.cursor() as cursor:
                    version = schema.check(cursor, self.location.shown)
                if version == 0:
                    raise StoreNotFoundError(f"no Tracer data at {self.location.shown} yet")
                if version < schema.SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.location.shown} has Tracer schema version {version}, older than"
                        f" this tracer-postgres reads ({schema.SCHEMA_VERSION}); open it once"
                        " with a writer (`tracer runs`) to migrate it"
                    )
            else:
                schema.migrate(connection, self.location.shown)
        except psycopg.Error as error:
            raise StorageError(describe(error, self.location)) from None
        finally:
            connection.close()

    @staticmethod
    def _create_schema(connection: psycopg.Connection[Any], name: str) -> None:
        """`CREATE SCHEMA IF NOT EXISTS`, which two processes running it at once can still
        fail with a duplicate (PostgreSQL checks the catalog before it locks it): the other
        process created it, which is all that was wanted."""
        with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name))
            )

    # -- transactions and reads -------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageError(f"storage {self.location.shown} is closed")
        try:
            with self._pool.connection(timeout=CONNECT_WAIT_S) as connection:
                yield connection
        except psycopg_pool.PoolTimeout:
            raise StorageError(
                f"no connection to PostgreSQL at {self.location.shown} within"
                f" {CONNECT_WAIT_S:.0f} s"
                " (is the server up and reachable?)"
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction: all of the block lands, or none of it (`StorageError`)."""
        if self.read_only:
            raise StorageError(f"{self.location.shown} was opened to read only")
        try:
            with self._connection() as connection, connection.transaction():
                yield connection
        except psycopg.Error as error:
            self._rolled_back(error)
            raise self._translate(error) from error
        except BaseException as error:
            self._rolled_back(error)
            raise

    def _translate(self, error: psycopg.Error) -> StorageError:
        return StorageError(describe(error, self.location))

    def _read(self, query: str, params: Sequence[Any] = (), *, binary: bool = False) -> list[Any]:
        try:
            with self._connection() as connection, connection.cursor(binary=binary) as cursor:
                cursor.execute(query, params)
                return cursor.fetchall()
        except psycopg.Error as error:
            raise self._translate(error) from error

    def _rolled_back(self, error: BaseException) -> None:
        """A write transaction was rolled back: forget anything cached from inside it."""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location.shown!r})"

    def __del__(self) -> None:  # a pool left open keeps threads; close it with the object
        pool: Optional[psycopg_pool.ConnectionPool[Any]] = getattr(self, "_pool", None)
        if pool is not None and not getattr(self, "_closed", True):
            try:
                pool.close(timeout=1.0)
            except Exception:  # interpreter teardown: nothing to report to
                logger.debug("closing a pool at garbage collection failed", exc_info=True)
