"""One webhook POST, with bounded retries: stdlib `urllib.request`, nothing to install.

Runs on the notifier's own thread only. Every attempt has a timeout, the attempts are
counted, and the waits between them end early when the run is ending. What it says about a
failure never holds the URL (a webhook's path is its password): the reasons are built from
the status code or the socket error, and anything else is scrubbed of the URL. The HTTP
modules (with `ssl`, about 15 ms) are imported on that thread at the first POST, not at
every `tracer.init`, which loads this module whether or not a webhook is set.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, NamedTuple, Optional
from urllib.parse import urlsplit

from tracer.version import __version__

if TYPE_CHECKING:
    import urllib.error

REQUEST_TIMEOUT_S = 5.0  # per attempt: connecting, sending and reading the answer
ATTEMPTS = 3
BACKOFF_S = 0.5  # before the 2nd attempt; doubles after each
MAX_WAIT_S = 5.0  # the longest pause between attempts, whatever Retry-After asks
_RESPONSE_BYTES = 64 * 1024  # read (and discard) at most this much of an answer


class Delivery(NamedTuple):
    delivered: bool
    attempts: int
    reason: str  # why it failed ("" when delivered); never holds the URL


class _Failed(Exception):
    def __init__(self, reason: str, retry: bool, wait_s: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait_s = wait_s


def _scrubbed(text: str, url: str) -> str:
    """`text` without the URL or its path, in case an error message quoted them."""
    text = text.replace(url, "<webhook>")
    path = urlsplit(url).path
    return text.replace(path, "/...") if len(path) > 1 else text


def _retry_after(error: urllib.error.HTTPError) -> Optional[float]:
    value = error.headers.get("Retry-After") if error.headers is not None else None
    try:
        return min(MAX_WAIT_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use the usual backoff


def post_json(url: str, body: bytes, timeout_s: float) -> None:
    """POST `body` once; raises `_Failed` with a URL-free reason unless the answer is 2xx."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"tracer/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(_RESPONSE_BYTES)
            status = int(response.status)
    except urllib.error.HTTPError as error:  # before URLError: it is one
        code = int(error.code)
        error.close()
        retry = code == 429 or code >= 500  # other 4xx: a wrong or revoked URL stays so
        raise _Failed(f"HTTP {code}", retry, _retry_after(error) if retry else None) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _Failed(f"no answer within {timeout_s:g} s", retry=True) from None
        raise _Failed(_scrubbed(str(error.reason), url), retry=True) from None
    except TimeoutError:
        raise _Failed(f"no answer within {timeout_s:g} s", retry=True) from None
    except (OSError, http.client.HTTPException) as error:
        reason = _scrubbed(f"{type(error).__name__}: {error}".rstrip(": "), url)
        raise _Failed(reason, retry=True) from None
    if not 200 <= status < 300:
        raise _Failed(f"HTTP {status}", retry=False)


def deliver(
    url: str,
    message: dict[str, Any],
    stopping: threading.Event,
    *,
    attempts: int = ATTEMPTS,
    timeout_s: float = REQUEST_TIMEOUT_S,
    backoff_s: float = BACKOFF_S,
) -> Delivery:
    """POST `message` as JSON, up to `attempts` times, waiting `backoff_s`, doubled each time
    (or the endpoint's Retry-After, at most `MAX_WAIT_S`) between them; gives up early once
    `stopping` is set (the run ended and finish stopped waiting)."""
    body = json.dumps(message, allow_nan=False).encode("utf-8")
    wait_s = backoff_s
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            post_json(url, body, timeout_s)
            return Delivery(True, attempt, "")
        except _Failed as failure:
            reason = failure.reason
            if not failure.retry or attempt == attempts:
                return Delivery(False, attempt, reason)
            pause = failure.wait_s if failure.wait_s is not None else wait_s
            if stopping.wait(min(pause, MAX_WAIT_S)):
                return Delivery(False, attempt, f"{reason} (not retried: the run ended)")
            wait_s *= 2
    return Delivery(False, attempts, reason)
