"""Fault injection for Tracer's SQLite storage, in the spirit of SQLite's own I/O-error
tests: a real SQLite connection that fails at chosen points.

`inject(monkeypatch, plan)` makes every connection Tracer opens from then on a
`FaultyConnection` (a `sqlite3.Connection` subclass, through the module-level `connect` of
`tracer.storage.sqlite.connection`) that raises `sqlite3.OperationalError("disk I/O error
...")` where `plan` says:

- "open": making the connection;
- "begin": `BEGIN IMMEDIATE`, the start of every write transaction;
- "write": a data statement (INSERT, UPDATE, DELETE) inside a transaction;
- "checkpoint": the write of a checkpoint snapshot (INSERT INTO checkpoints);
- "commit": `COMMIT`, after every statement of the transaction succeeded;
- "close": closing the connection.

A plan fails occurrences `first` to `last` (counted from 1, per point, over every
connection, from when it is armed), so a test can make storage fail for a while and then
recover, or fail to the end. Inject before `tracer.init` (the run's connection is made
there) with `armed=False`, and arm the plan once the run has started. Otherwise the
statements really run on a real file: what a reader sees afterwards is what Tracer's
transactions left there.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from tracer.storage.sqlite import connection as sqlite_connection

POINTS = ("open", "begin", "write", "checkpoint", "commit", "close")


@dataclass
class FaultPlan:
    """Fail `point` at its occurrences `first`..`last` (None: every one from `first` on)."""

    point: str
    first: int = 1
    last: Optional[int] = None
    armed: bool = True  # occurrences count (and fail) only while armed
    seen: dict[str, int] = field(default_factory=dict)
    injected: int = 0

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"unknown fault point {self.point!r}; one of {POINTS}")

    def check(self, point: str) -> None:
        """Count an occurrence of `point`; raise the injected error when the plan says so."""
        if not self.armed:
            return
        count = self.seen[point] = self.seen.get(point, 0) + 1
        if (
            point == self.point
            and count >= self.first
            and (self.last is None or count <= self.last)
        ):
            self.injected += 1
            raise sqlite3.OperationalError(f"disk I/O error (injected at {point} #{count})")


_plan: Optional[FaultPlan] = None


def _points_of(sql: str) -> list[str]:
    words = sql.lstrip().split(None, 3)
    verb = words[0].upper() if words else ""
    if verb == "BEGIN":
        return ["begin"]
    if verb == "COMMIT":
        return ["commit"]
    if verb in ("INSERT", "UPDATE", "DELETE"):
        table = " ".join(words[1:4]).lower()
        return ["write", "checkpoint"] if "into checkpoints" in table else ["write"]
    return []


class FaultyConnection(sqlite3.Connection):
    """A real connection whose statements fail where the active plan says."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _plan is not None:
            _plan.check("open")
        super().__init__(*args, **kwargs)

    def _check(self, sql: str) -> None:
        if _plan is not None:
            for point in _points_of(sql):
                _plan.check(point)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._check(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        self._check(sql)
        return super().executemany(sql, parameters)

    def close(self) -> None:
        if _plan is not None:
            _plan.check("close")
        super().close()


def inject(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan) -> FaultPlan:
    """From now on (until the test ends), Tracer's SQLite connections follow `plan`."""
    monkeypatch.setattr(sys.modules[__name__], "_plan", plan)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return sqlite3.connect(*args, factory=FaultyConnection, **kwargs)

    monkeypatch.setattr(sqlite_connection, "connect", connect)
    return plan


def stop(plan: FaultPlan) -> None:
    """No more faults from `plan` (the storage recovers)."""
    plan.first = plan.last = 0
