"""Anomaly notifications to a webhook: one JSON POST per episode, never blocking training.

`Webhooks` keeps one `WebhookNotifier` per run that has a `webhook_url`; `plugins/builtins.py`
drives it from the `tracer_run_start`, `tracer_anomaly` and `tracer_run_end` hooks. Only the
process that stores the run notifies (a follower rank's run id is "", and it gets no hooks).

Why it can never slow a step: the anomaly hook runs on the run's writer thread, not the
training thread, and even there it only decides and enqueues (a bounded queue: a full one drops
the message and counts it). A daemon thread of the notifier's own posts, with a timeout per
attempt and a bounded number of attempts. At finish the run waits for queued messages at most
`FINISH_WAIT_S` (an anomaly found in the last steps still goes out), then stops waiting: a
hanging endpoint holds finish no longer, and what was still queued is counted.

What is sent: one message per episode (type, start step, subject), the first time the hook
sees it at or above `webhook_min_severity`, at most `webhook_max_per_minute` in any 60 s. What
the cap holds back is counted by type, named in the next message, and announced in one last
message at finish. A failing endpoint is logged once (scheme and host only: a webhook's path
is its secret) and the counts are logged when the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tracer.actions.webhook_delivery import ATTEMPTS, REQUEST_TIMEOUT_S, Delivery, deliver
from tracer.actions.webhook_message import (
    RunContext,
    anomaly_message,
    episode_key,
    held_back_message,
    masked_url,
)
from tracer.records import severity_rank

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import AnomalyWrite

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64  # messages waiting for the endpoint; past it, new ones are dropped and counted
FINISH_WAIT_S = 2.0  # the longest finish waits for queued messages
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class WebhookReport:
    """What became of a run's notifications."""

    sent: int = 0
    failed: int = 0  # given up after the attempts (or refused by the endpoint)
    dropped: int = 0  # the queue was full (the endpoint far slower than anomalies came)
    held_back: int = 0  # over the rate limit: counted, named in a later message
    unsent_at_finish: int = 0  # still queued or in flight when finish stopped waiting

    @property
    def problems(self) -> bool:
        return bool(self.failed or self.dropped or self.unsent_at_finish)

    def describe(self) -> str:
        return (
            f"{self.sent} sent, {self.failed} failed, {self.dropped} dropped (queue full),"
            f" {self.unsent_at_finish} unsent when the run ended, {self.held_back} held back"
            " by the rate limit"
        )


class WebhookNotifier:
    """One run's notifications. `offer` is called on the writer thread, `close` once at the
    run's end; a daemon thread, started with the first message, does the posting."""

    def __init__(
        self,
        url: str,
        run: RunContext,
        *,
        min_severity: str = "warning",
        max_per_minute: int = 10,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        timeout_s: float = REQUEST_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._run = run
        self._min_rank = severity_rank(min_severity)
        self._max_per_minute = max_per_minute
        self._attempts = attempts
        self._timeout_s = timeout_s
        self._clock = clock
        self._queue: queue.Queue[Optional[dict[str, Any]]] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._seen: set[tuple[str, int, str]] = set()
        self._recent: deque[float] = deque()  # when the messages of the last 60 s were queued
        self._held_unannounced: Counter[str] = Counter()
        self._pending = 0  # queued or being posted
        self._closed = False
        self._failure_logged = False
        self._sent = self._failed = self._dropped = self._held_back = 0
        self._unsent_at_finish = 0

    @classmethod
    def for_run(cls, run: RunHandle) -> Optional[WebhookNotifier]:
        """The notifier of `run`, or None when it has no webhook or stores nothing here."""
        config = run.config
        if not run.run_id or not config.webhook_url:
            return None
        context = RunContext(run.run_id, run.run_name, config.project_name, config.dashboard_url)
        return cls(
            config.webhook_url,
            context,
            min_severity=config.webhook_min_severity,
            max_per_minute=config.webhook_max_per_minute,
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({masked_url(self._url)}, run_id={self._run.run_id!r})"

    # -- the writer thread ------------------------------------------------------------------
    def offer(self, anomaly: AnomalyWrite) -> None:
        """Queue a message for `anomaly` if it is a new episode at or above the severity and
        within the rate limit; never waits."""
        if severity_rank(anomaly["severity"]) < self._min_rank:
            return
        key = episode_key(anomaly)
        with self._lock:
            if self._closed or key in self._seen:
                return
            self._seen.add(key)
            now = self._clock()
            while self._recent and now - self._recent[0] >= RATE_WINDOW_S:
                self._recent.popleft()
            if len(self._recent) >= self._max_per_minute:
                self._held_back += 1
                self._held_unannounced[anomaly["anomaly_type"]] += 1
                return
            self._recent.append(now)
            held = dict(self._held_unannounced)
            self._held_unannounced.clear()
            self._enqueue(anomaly_message(anomaly, self._run, held))

    def _enqueue(self, message: dict[str, Any]) -> None:
        """Under the lock: hand `message` to the posting thread, or count it dropped."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._dropped += 1
            return
        self._pending += 1
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._post_queued, name="tracer-webhook", daemon=True
            )
            self._thread.start()

    # -- the notifier's thread --------------------------------------------------------------
    def _post_queued(self) -> None:
        while True:
            message = self._queue.get()
            if message is None or self._stopping.is_set():
                return
            outcome = deliver(
                self._url,
                message,
                self._stopping,
                attempts=self._attempts,
                timeout_s=self._timeout_s,
            )
            self._count(outcome)

    def _count(self, outcome: Delivery) -> None:
        with self._lock:
            self._pending -= 1
            if outcome.delivered:
                self._sent += 1
            else:
                self._failed += 1
            first_failure = not outcome.delivered and not self._failure_logged
            self._failure_logged = self._failure_logged or first_failure
            self._lock.notify_all()
        if first_failure:
            logger.warning(
                "Tracer could not deliver an anomaly notification of run %s to the webhook at"
                " %s after %d attempt(s): %s. Training goes on; further failures are counted"
                " and summarised when the run ends.",
                self._run.run_id,
                masked_url(self._url),
                outcome.attempts,
                outcome.reason,
            )

    # -- the run's end ----------------------------------------------------------------------
    def close(self, wait_s: float = FINISH_WAIT_S) -> WebhookReport:
        """Announce what the rate limit held back, wait at most `wait_s` for the queue to
        empty, then stop the thread (after the attempt in flight, if any). Idempotent."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._held_unannounced:
                    held = dict(self._held_unannounced)
                    self._held_unannounced.clear()
                    self._enqueue(held_back_message(self._run, held))
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            self._unsent_at_finish = self._pending
            self._stopping.set()
        with contextlib.suppress(queue.Full):  # wakes an idle thread; a busy one sees
            self._queue.put_nowait(None)  # `_stopping` after its attempt
        return self.report()

    def report(self) -> WebhookReport:
        with self._lock:
            return WebhookReport(
                self._sent, self._failed, self._dropped, self._held_back, self._unsent_at_finish
            )


class Webhooks:
    """The notifiers of the runs going on in this process, by run id (several runs may share
    a process: `TrainingTracer` used directly)."""

    def __init__(self) -> None:
        self._by_run: dict[str, WebhookNotifier] = {}
        self._lock = threading.Lock()

    def run_started(self, run: RunHandle) -> None:
        notifier = WebhookNotifier.for_run(run)
        if notifier is not None:
            with self._lock:
                self._by_run[run.run_id] = notifier

    def anomaly_found(self, run: RunHandle, anomaly: AnomalyWrite) -> None:
        notifier = self._by_run.get(run.run_id)
        if notifier is not None:
            notifier.offer(anomaly)

    def run_ended(self, run: RunHandle) -> Optional[WebhookReport]:
        """Close the run's notifier (bounded by `FINISH_WAIT_S`) and log what it did."""
        with self._lock:
            notifier = self._by_run.pop(run.run_id, None)
        if notifier is None:
            return None
        report = notifier.close()
        if report.problems or report.held_back:
            logger.warning(
                "Tracer run %s: webhook notifications: %s.", run.run_id, report.describe()
            )
        else:
            logger.info("Tracer run %s: webhook notifications: %d sent.", run.run_id, report.sent)
        return report
