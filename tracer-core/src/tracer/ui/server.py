"""Running the dashboard: bind a socket (127.0.0.1 unless asked), serve the app with
uvicorn, optionally open a browser on it.

Starlette and uvicorn are imported only here and in `app` (the extra `tracer-core[ui]`);
`require()` says what to install when they are missing. Binding our own socket first means
the address is known (port 0 picks a free one) before the server runs, and a port in use is
a clear error rather than a traceback.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Optional
from urllib.parse import quote

from tracer.exceptions import TracerError
from tracer.ui import INSTALL_HINT

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def require() -> None:
    """ImportError naming the extra to install when starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); TracerError when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise TracerError(f"cannot listen on {host}:{port}: {error}") from error
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections wait in the backlog until the server accepts them
    except OSError as error:
        sock.close()
        raise TracerError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); pass another --port"
        ) from error
    return sock


def url_of(sock: socket.socket, host: str, token: Optional[str]) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


def serve(
    storage: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: Optional[str] = None,
    open_browser: bool = False,
    announce: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve the dashboard over `storage` until interrupted (Ctrl-C). `announce` gets the
    address once the socket is bound (the CLI prints it)."""
    require()
    import uvicorn

    from tracer.ui.app import create_app

    loopback = is_loopback(host)
    if not loopback:
        logger.warning(
            "The Tracer dashboard listens on %s: anyone who can reach this machine on port %s"
            " can read your runs%s.",
            host,
            port,
            "" if token else " (pass --token to require a secret)",
        )
    allowed = None
    if loopback:
        allowed = (*LOOPBACK_NAMES, host.strip("[]"))
    app = create_app(storage, token, allowed_hosts=allowed)
    sock = bind(host, port)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
    )
    server = uvicorn.Server(config)
    url = url_of(sock, host, token)
    announce(url)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.store.close()


def _open_when_started(server: object, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not getattr(server, "started", False):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    if not webbrowser.open(url):
        logger.warning("could not open a browser; open %s yourself", url)
