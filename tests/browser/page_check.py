"""Open an HTML file in headless Chromium and report what a reader would see and what it cost.

`check_page` is the browser tests' one entry point: it loads a `file://` page in Debian's
Chromium through playwright, records console errors and warnings, uncaught page errors and
every request the page makes, measures which SVG charts and canvases are actually drawn, and
saves a full-page screenshot. The tests decide what is acceptable; this module only observes.

Every request other than the page's own document and inline `data:`/`blob:` URIs counts as a
network request (a self-contained report needs none) and is aborted before it leaves the
browser, so a page that reaches out fails fast and deterministically instead of waiting on a
network that CI does not have.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Request, Route, WebSocket

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    """Debian's /usr/bin/chromium (what tests/browser/ensure_chromium.py installs), unless
    TRACER_CHROMIUM names another Chromium build for a local run."""
    return os.environ.get("TRACER_CHROMIUM") or CHROMIUM


# Without these Chromium's background services (updates, sync, QUIC probes, first-run) try to
# connect out, which fails on CI; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 30_000
# URL schemes served from inside the page itself: never a network request.
_INLINE_SCHEMES = ("data:", "blob:")

# Run in the page after load: what is drawn. An SVG counts as drawn when it is laid out with a
# non-zero box and holds at least one visible shape whose own bounding box is non-zero (a flat
# line has zero height, so width OR height); nested <svg>s are counted with their outermost one.
_MEASURE_JS = """
() => {
  const SHAPES = "path, polyline, polygon, line, rect, circle, ellipse";
  const visible = (el) => {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    return style.fill !== "none" || style.stroke !== "none";
  };
  const shapeDrawn = (el) => {
    if (!visible(el)) return false;
    try {
      const box = el.getBBox();
      return box.width > 0 || box.height > 0;
    } catch (e) {
      return false;
    }
  };
  const svgs = [...document.querySelectorAll("svg")].filter(
    (svg) => !svg.parentElement || !svg.parentElement.closest("svg"));
  const svgInfo = svgs.map((svg) => {
    const rect = svg.getBoundingClientRect();
    const shapes = [...svg.querySelectorAll(SHAPES)];
    const drawn = shapes.filter(shapeDrawn).length;
    const label = svg.getAttribute("aria-label") || svg.id ||
      (svg.querySelector("title") ? svg.querySelector("title").textContent : "") || "";
    return {label: label.trim().slice(0, 80), width: rect.width, height: rect.height,
            shapes: shapes.length, drawn_shapes: drawn};
  });
  const canvasInfo = [...document.querySelectorAll("canvas")].map((canvas) => {
    const rect = canvas.getBoundingClientRect();
    let painted = null;  // null: not a readable 2D canvas (WebGL, or tainted)
    try {
      const ctx = canvas.width && canvas.height ? canvas.getContext("2d") : null;
      if (ctx) {
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        painted = false;
        for (let i = 3; i < data.length; i += 4) {
          if (data[i] !== 0) { painted = true; break; }
        }
      }
    } catch (e) {
      painted = null;
    }
    return {width: rect.width, height: rect.height, painted: painted};
  });
  return {
    title: document.title,
    text: document.body ? document.body.innerText : "",
    svgs: svgInfo,
    canvases: canvasInfo,
    page_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight,
  };
}
"""


@dataclass(frozen=True)
class SvgInfo:
    """One outermost <svg>: its laid-out size and how many of its shapes are drawn."""

    label: str
    width: float
    height: float
    shapes: int
    drawn_shapes: int

    @property
    def drawn(self) -> bool:
        return self.width > 0 and self.height > 0 and self.drawn_shapes > 0


@dataclass(frozen=True)
class CanvasInfo:
    """One <canvas>: its laid-out size; `painted` None when its pixels can't be read (WebGL)."""

    width: float
    height: float
    painted: bool | None

    @property
    def drawn(self) -> bool:
        return self.width > 0 and self.height > 0 and self.painted is not False


@dataclass
class PageReport:
    """What `check_page` saw. `network_requests` is what a self-contained page must not make."""

    url: str
    title: str
    text: str
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)
    svgs: list[SvgInfo] = field(default_factory=list)
    canvases: list[CanvasInfo] = field(default_factory=list)
    page_size: tuple[int, int] = (0, 0)
    screenshot: Path | None = None

    @property
    def svg_count(self) -> int:
        return len(self.svgs)

    @property
    def drawn_svg_count(self) -> int:
        return sum(svg.drawn for svg in self.svgs)

    def charts(self, min_width: float = 100, min_height: float = 50) -> list[SvgInfo]:
        """Drawn SVGs at least chart-sized, so icons and legend swatches don't count."""
        return [s for s in self.svgs if s.drawn and s.width >= min_width and s.height >= min_height]

    @property
    def drawn_canvas_count(self) -> int:
        return sum(canvas.drawn for canvas in self.canvases)

    def describe(self) -> str:
        """A few lines for assertion messages: everything a failing test needs to explain."""
        svgs = ", ".join(
            f"{s.label or '?'} {s.width:.0f}x{s.height:.0f} {s.drawn_shapes}/{s.shapes}"
            for s in self.svgs
        )
        return (
            f"page {self.url} (title {self.title!r}, {self.page_size[0]}x{self.page_size[1]})\n"
            f"  console errors: {self.console_errors}\n"
            f"  console warnings: {self.console_warnings}\n"
            f"  page errors: {self.page_errors}\n"
            f"  network requests: {self.network_requests}\n"
            f"  svgs (drawn shapes/shapes): [{svgs}]\n"
            f"  canvases: {self.canvases}\n"
            f"  screenshot: {self.screenshot}"
        )


def _is_network(url: str, page_url: str) -> bool:
    return url != page_url and not url.startswith(_INLINE_SCHEMES)


def _console_line(message: ConsoleMessage) -> str:
    location = message.location or {}
    where = location.get("url") or ""
    if where:
        where = f" ({where}:{location.get('lineNumber', 0)})"
    return f"{message.text}{where}"


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Headless Chromium, started once and shared (driver and browser start-up take ~3 s);
    each `check_page` still gets a fresh context: no cache, storage or cookies carried over."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=list(CHROMIUM_ARGS),
            timeout=TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


def check_page(
    html_path: Path,
    screenshot: Path,
    width: int = 1280,
    height: int = 900,
    browser: Browser | None = None,
) -> PageReport:
    """Load `html_path` from disk in headless Chromium at `width`x`height`, observe it and save a
    full-page PNG to `screenshot` (its folder is created). Page loads time out after 30 s.

    `browser` (from `chromium_browser()`) is reused if given, else one is started for this page
    (not possible while another playwright sync session runs in this thread: pass that one's).
    Needs playwright and Chromium at /usr/bin/chromium (tests/browser/conftest.py skips the
    tests without them).
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(html_path)
    if browser is None:
        with chromium_browser() as own:
            return check_page(html_path, screenshot, width, height, own)

    page_url = html_path.as_uri()
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    report = PageReport(url=page_url, title="", text="")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            report.console_errors.append(_console_line(message))
        elif message.type == "warning":
            report.console_warnings.append(_console_line(message))

    def on_request(request: Request) -> None:
        report.requests.append(request.url)
        if _is_network(request.url, page_url):
            report.network_requests.append(request.url)

    def on_websocket(websocket: WebSocket) -> None:
        report.requests.append(websocket.url)
        report.network_requests.append(websocket.url)

    def route(route: Route) -> None:
        if _is_network(route.request.url, page_url):
            route.abort()
        else:
            route.continue_()

    context = browser.new_context(
        viewport={"width": width, "height": height}, service_workers="block"
    )
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.route("**/*", route)
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: report.page_errors.append(str(error)))
        page.on("request", on_request)
        page.on("websocket", on_websocket)
        page.goto(page_url, wait_until="load", timeout=TIMEOUT_MS)
        # Two animation frames: whatever the page draws on load has been laid out.
        page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        measured = page.evaluate(_MEASURE_JS)
        page.screenshot(path=str(screenshot), full_page=True, timeout=TIMEOUT_MS)
    finally:
        context.close()

    report.title = measured["title"]
    report.text = measured["text"]
    report.svgs = [SvgInfo(**svg) for svg in measured["svgs"]]
    report.canvases = [CanvasInfo(**canvas) for canvas in measured["canvases"]]
    report.page_size = (int(measured["page_width"]), int(measured["page_height"]))
    report.screenshot = screenshot
    return report
