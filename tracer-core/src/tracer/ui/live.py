"""Live updates for the dashboard: poll the store, send what changed as server-sent events.

Each open page (`GET /api/events`) gets its own `LiveRuns`, which remembers what that page
was told. A poll is two cheap reads, the run rows and the anomaly counts of every run
(never a metric history), every `POLL_INTERVAL_S`, so a new step, anomaly or status change
reaches the page within about a second; a run whose process died reads "crashed" at the
next poll (storage computes the effective status). Only runs whose status, steps or
anomaly counts changed are sent (`event: runs`); the episodes of such a run are re-read and
the new or updated ones sent (`event: anomalies`). A comment line every `KEEPALIVE_S` keeps
proxies from closing a quiet stream. The stream ends when the page goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional

from tracer.analysis.encode import dumps
from tracer.analysis.payloads import anomaly_row, run_row
from tracer.exceptions import TracerError
from tracer.records import RunRecord
from tracer.storage.base import StorageBackend

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0

Event = tuple[str, dict[str, Any]]


def _signature(record: RunRecord, counts: dict[str, int]) -> tuple[Any, ...]:
    return (record["status"], record["total_steps"], tuple(sorted(counts.items())))


class LiveRuns:
    """What one page has been told, and what to tell it next (`poll`)."""

    def __init__(self, storage: StorageBackend) -> None:
        self.storage = storage
        self.signatures: dict[str, tuple[Any, ...]] = {}
        self.episodes: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self.started = False

    def poll(self) -> list[Event]:
        """The events since the last poll; the first one sends every run (and no anomaly
        events: the page reads a run's episodes from `/api/runs/<run>`)."""
        records = self.storage.list_runs()
        counts = self.storage.anomaly_counts()
        now = time.time()
        changed: list[dict[str, Any]] = []
        events: list[Event] = []
        for record in records:
            run_id = record["run_id"]
            run_counts = counts.get(run_id, {})
            signature = _signature(record, run_counts)
            if self.signatures.get(run_id) == signature:
                continue
            self.signatures[run_id] = signature
            changed.append(run_row(record, run_counts, now))
            if run_counts or run_id in self.episodes:
                updated = self._episodes(run_id)
                if updated and self.started:
                    events.append(("anomalies", {"run_id": run_id, "anomalies": updated}))
        removed = sorted(set(self.signatures) - {r["run_id"] for r in records})
        for run_id in removed:
            self.signatures.pop(run_id, None)
            self.episodes.pop(run_id, None)
        if changed or removed or not self.started:
            runs: dict[str, Any] = {"runs": changed}
            if removed:
                runs["removed"] = removed
            events.insert(0, ("runs", runs))
        self.started = True
        return events

    def _episodes(self, run_id: str) -> list[dict[str, Any]]:
        """The run's episodes that are new or changed since this page last saw them."""
        known = self.episodes.setdefault(run_id, {})
        updated = []
        for anomaly in self.storage.get_anomalies(run_id):
            row = anomaly_row(anomaly)
            key = (row["anomaly_type"], row["step"], row["subject"])
            if known.get(key) != row:
                known[key] = row
                updated.append(row)
        return updated


def message(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (JSON data on one line)."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


async def stream(
    open_storage: Callable[[], Optional[StorageBackend]],
    disconnected: Callable[[], Awaitable[bool]],
    interval: float = POLL_INTERVAL_S,
    keepalive: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """The event stream of one page. `open_storage` returns the store, or None while it
    does not exist yet (training has not started); the poll runs in a worker thread so a
    slow disk never blocks the server."""
    live: Optional[LiveRuns] = None
    last_sent = time.monotonic()
    yield b"retry: 2000\n\n"  # the browser reconnects after 2 s if the stream breaks
    while not await disconnected():
        events: list[Event] = []
        try:
            if live is None:
                storage = await asyncio.to_thread(open_storage)
                live = LiveRuns(storage) if storage is not None else None
            if live is not None:
                events = await asyncio.to_thread(live.poll)
        except TracerError as error:  # a store being replaced, a locked file: try again
            logger.warning("dashboard: reading the store failed (%s); retrying", error)
        for name, data in events:
            yield message(name, data)
            last_sent = time.monotonic()
        if time.monotonic() - last_sent >= keepalive:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(interval)
