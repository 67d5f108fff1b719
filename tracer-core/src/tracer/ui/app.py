"""The dashboard's Starlette app: the JSON API of `tracer.ui.api`, the live events of
`tracer.ui.live`, and the page (`static/`, with the modules it shares with the report from
`tracer/web/`), behind one guard.

Safe by default. Every response carries a Content-Security-Policy that allows nothing
outside the server (no CDN, no font, no beacon) and `X-Content-Type-Options: nosniff`. With
a token, every request must carry it (`?token=`, `Authorization: Bearer`, or the cookie set
when the page was opened with `?token=`, so the page's own scripts and styles load). With
`allowed_hosts` (the server sets it when bound to loopback), a request naming another Host
is refused: a web page cannot reach the dashboard through DNS rebinding. The store is
opened read-only (`open_storage(..., read_only=True)`): nothing here ever writes.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracer.analysis import QueryEngine
from tracer.analysis.encode import dumps
from tracer.exceptions import RunNotFoundError, StorageError, StoreNotFoundError
from tracer.storage.base import StorageBackend
from tracer.storage.registry import open_storage
from tracer.ui import api, live

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# The page's modules shared with the report (charts, heatmap, tables, uPlot) live in
# `tracer/web/`, a folder of static files and no Python, and are served under /static too.
SHARED_STATIC = ("tracer", "web")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
TOKEN_COOKIE = "tracer_ui_token"
PLACEHOLDER = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Tracer</title></head><body>"
    "<h1>Tracer dashboard</h1><p>The page is not installed; the JSON API answers at "
    "<a href='api/runs'>/api/runs</a>.</p></body></html>"
)


class Store:
    """The store, opened read-only on first use; until it exists (training not started
    yet), `get` returns None and the API answers as for an empty store. A store opened here
    is closed when the app shuts down (`_closing_the_store`), so a backend with a connection
    pool (PostgreSQL) stops its threads then, not at interpreter exit; a backend handed in
    stays its caller's to close."""

    def __init__(self, location: Union[str, StorageBackend]) -> None:
        self.location = location if isinstance(location, str) else ""
        self._backend = location if isinstance(location, StorageBackend) else None
        self.owned = isinstance(location, str)
        self._lock = threading.Lock()

    def get(self) -> Optional[StorageBackend]:
        with self._lock:
            if self._backend is None:
                try:
                    self._backend = open_storage(self.location, read_only=True)
                except StoreNotFoundError:
                    return None
            return self._backend

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()


def _closing_the_store(store: Store) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: nothing at startup; at shutdown, close the store if it was opened
    here. (`tracer ui` runs uvicorn without lifespan and closes the store itself.)"""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if store.owned:
                store.close()

    return lifespan


class Guard:
    """ASGI middleware: the host and token checks, and the security headers on every
    response (errors included)."""

    def __init__(
        self, app: ASGIApp, token: Optional[str], allowed_hosts: Optional[Collection[str]]
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from_query = False
        cookie: list[tuple[bytes, bytes]] = []

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = SECURITY_HEADERS + cookie
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = Headers(scope=scope)
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            await _error(400, "this dashboard answers only to its own host name")(
                scope, receive, secured
            )
            return
        if self.token is not None:
            given, from_query = _presented(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _error(401, "a token is required: add ?token=... to the address")(
                    scope, receive, secured
                )
                return
            if from_query:
                value = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                cookie.append((b"set-cookie", value.encode()))
        await self.app(scope, receive, secured)


def _presented(scope: Scope, headers: Headers) -> tuple[Optional[str], bool]:
    """The token a request carries, and whether it came in the query string."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0], True
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), False
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value, False
    return None, False


def _error(status: int, text: str) -> Response:
    return Response(dumps({"error": text}), status, media_type="application/json")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, f"no such page: {request.url.path}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(405, "the dashboard's API only answers GET")


def _json(payload: Any) -> Response:
    return Response(dumps(payload), media_type="application/json", headers=_NO_STORE)


_NO_STORE = {"cache-control": "no-store"}


def _answer(store: Store, build: Callable[[QueryEngine], Any], empty: Any = None) -> Response:
    """Run an API function on the store; Tracer's errors become JSON errors."""
    try:
        storage = store.get()
        if storage is None:
            if empty is not None:
                return _json(empty)
            raise RunNotFoundError("no runs yet: nothing has been recorded at this location")
        return _json(build(QueryEngine(storage=storage)))
    except (RunNotFoundError, api.NotFound) as error:
        return _error(404, str(error.args[0]) if error.args else str(error))
    except ValueError as error:
        return _error(400, str(error))
    except StorageError as error:
        logger.warning("dashboard: %s", error)
        return _error(503, str(error))


def _number(request: Request, name: str) -> Optional[float]:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None


def create_app(
    storage: Union[str, StorageBackend],
    token: Optional[str] = None,
    *,
    allowed_hosts: Optional[Collection[str]] = None,
    poll_interval: float = live.POLL_INTERVAL_S,
) -> Starlette:
    """The dashboard over `storage` (a location, opened read-only when first needed, or an
    open backend). `token`: required on every request when set. `allowed_hosts`: the Host
    names accepted (None: any)."""
    store = Store(storage)

    def runs(request: Request) -> Response:
        project = request.query_params.get("project") or None
        return _answer(
            store, lambda q: api.runs_payload(q, project), empty={"runs": [], "projects": []}
        )

    def run(request: Request) -> Response:
        return _answer(store, lambda q: api.run_payload(q, request.path_params["run"]))

    def series(request: Request) -> Response:
        def build(query: QueryEngine) -> Any:
            params = request.query_params
            if not params.get("metric"):
                raise ValueError("metric= is required")
            return api.series_payload(
                query,
                request.path_params["run"],
                params["metric"],
                api.points_param(params.get("points")),
                _number(request, "start"),
                _number(request, "end"),
                params.get("x") or "step",
            )

        return _answer(store, build)

    def compare(request: Request) -> Response:
        def build(query: QueryEngine) -> Any:
            params = request.query_params
            if not params.get("metric") or not params.get("runs"):
                raise ValueError("runs= and metric= are required")
            points = api.points_param(params.get("points"))
            return api.compare_payload(query, params["runs"], params["metric"], points)

        return _answer(store, build)

    async def events(request: Request) -> Response:
        app.state.live_streams += 1

        async def body() -> Any:
            try:
                async for chunk in live.stream(store.get, request.is_disconnected, poll_interval):
                    yield chunk
            finally:
                app.state.live_streams -= 1

        headers = {**_NO_STORE, "x-accel-buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    def index(request: Request) -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, headers=_NO_STORE)
        return HTMLResponse(PLACEHOLDER)

    app = Starlette(
        lifespan=_closing_the_store(store),
        exception_handlers={404: _not_found, 405: _not_allowed},
        routes=[
            Route("/", index),
            Route("/api/runs", runs),
            Route("/api/runs/{run}", run),
            Route("/api/runs/{run}/series", series),
            Route("/api/compare", compare),
            Route("/api/events", events),
            Mount(
                "/static",
                StaticFiles(directory=STATIC_DIR, packages=[SHARED_STATIC], check_dir=False),
                name="static",
            ),
        ],
    )
    app.state.live_streams = 0  # open event streams (for tests and logs)
    app.state.store = store
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts)
    return app
