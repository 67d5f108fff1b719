"""A real webhook endpoint for tests: `http.server.ThreadingHTTPServer` on 127.0.0.1, port 0.

Modes: "ok" answers 204 and keeps each JSON body; "status:<code>" answers that code;
"hang" accepts the request, reads it and never answers until the test ends. `dead_url()` is
a port nothing listens on (connection refused). Every URL carries a unique secret path, so a
test can look for it in files and logs.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.secret = f"hooks/T0/B0/{uuid.uuid4().hex}"
        self.messages: list[dict[str, Any]] = []
        self.requests = 0  # POSTs whose body was read, answered or not
        self.release = threading.Event()  # lets hanging handlers go at teardown
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{self.secret}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests += 1
                if receiver.mode == "hang":
                    receiver.release.wait()
                    return
                if receiver.mode.startswith("status:"):
                    self.send_response(int(receiver.mode.split(":", 1)[1]))
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.messages.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's log must hold only what Tracer logged

        return Handler

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def anomalies(self) -> list[dict[str, Any]]:
        """The structured anomaly of every message received (held-back summaries aside)."""
        with self._lock:
            return [m["anomaly"] for m in self.messages if m.get("anomaly") is not None]


@contextmanager
def receiving(mode: str = "ok") -> Iterator[Receiver]:
    receiver = Receiver(mode).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def dead_url() -> str:
    """A URL on a port that was free a moment ago: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/T0/B0/{uuid.uuid4().hex}"


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Poll `condition` until true or `timeout_s` passed (a bound against hangs, not a
    measurement); returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
