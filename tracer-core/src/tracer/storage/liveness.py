"""Tell a dead run from a running one, so no run reads "running" forever.

A run's process writes a heartbeat every `heartbeat_interval` seconds. Readers call
`effective_status`: a "running" run whose process is gone from this host, or whose heartbeat
is older than a few intervals, reads as "crashed". The stored status is left as it is, so a
run that is only slow (a stalled NFS mount) shows "running" again once its heartbeat resumes.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

STALE_AFTER_INTERVALS = 3.0
STALE_GRACE_SECONDS = 10.0
_HOSTNAME = socket.gethostname()


def this_host() -> str:
    return _HOSTNAME


def process_is_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def effective_status(
    status: str,
    *,
    host: Optional[str],
    pid: Optional[int],
    heartbeat: Optional[float],
    heartbeat_interval: Optional[float],
    now: Optional[float] = None,
) -> str:
    if status != "running":
        return status
    if host == _HOSTNAME and pid is not None and pid != os.getpid() and not process_is_alive(pid):
        return "crashed"
    if heartbeat is not None and heartbeat_interval:
        now = time.time() if now is None else now
        if now - heartbeat > STALE_AFTER_INTERVALS * heartbeat_interval + STALE_GRACE_SECONDS:
            return "crashed"
    return status
