"""The HTML report, opened in headless Chromium the way a reader opens it: from disk, offline.

Real runs are traced with the public API (a tiny torch training, `tracer.watch`, a NaN fed in
one batch so the report has anomalies to show), written with `tracer.report.write_report` and
checked with `check_page`: no console or page errors, no network requests at all, at least
four charts actually drawn (uPlot canvases, the dashboard's chart code inlined), a title. One
test works the charts as a reader does: hover shows a value, a drag zooms the x range, the
NaN is marked. Screenshots (and the pages) are kept as test
artifacts in $TRACER_TEST_ARTIFACTS or <repo>/test-artifacts/.

A negative control proves the checker itself catches what these tests rely on it to catch.
The report tests skip while `tracer.report` (or, for the CLI test, `tracer.cli`) does not exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Optional

import pytest

from tests.browser.page_check import PageReport, check_page
from tests.browser.trainings import train_mlp

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parents[2]
PROJECT = "browser-report"
STEPS = 40
NAN_STEP = 17
MIN_CHARTS = 4

needs_cli = pytest.mark.skipif(
    importlib.util.find_spec("tracer.cli") is None,
    reason="tracer.cli (the `tracer report` command) does not exist yet",
)


def artifacts_dir() -> Path:
    """$TRACER_TEST_ARTIFACTS, else <repo>/test-artifacts/ (git-ignored); created."""
    folder = Path(os.environ.get("TRACER_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep(report: PageReport, html: Path, name: str) -> None:
    """Keep the page next to its screenshot, for a human to open after a CI run."""
    shutil.copyfile(html, artifacts_dir() / f"{name}.html")
    assert report.screenshot is not None and report.screenshot.stat().st_size > 0


@pytest.fixture
def report_module() -> ModuleType:
    """`tracer.report`; the test skips while it has not been written (a broken one fails)."""
    spec = importlib.util.find_spec("tracer.report")
    if spec is None or spec.origin is None:  # no package, or a folder without __init__.py yet
        pytest.skip("tracer.report (write_report) does not exist yet")
    return importlib.import_module("tracer.report")


def train_run(run_name: str, *, seed: int, lr: float, nan_step: Optional[int]) -> str:
    """A real traced training run in ./.tracer (`tests/browser/trainings.py`); its run id."""
    return train_mlp(
        steps=STEPS,
        lr=lr,
        seed=seed,
        nan_step=nan_step,
        project=PROJECT,
        run_name=run_name,
        tags=["browser-test"],
        config={"lr": lr, "seed": seed, "steps": STEPS, "nan_step": nan_step},
    )


def assert_clean_report(report: PageReport, *names: str) -> None:
    """What every report must pass in the browser; `names` must appear in its text."""
    detail = report.describe()
    assert report.console_errors == [], detail
    assert report.page_errors == [], detail
    assert report.network_requests == [], detail
    assert set(report.requests) <= {report.url}, detail
    assert report.title.strip(), detail
    assert report.drawn_canvas_count >= MIN_CHARTS, detail
    for name in names:
        assert name in report.text, f"{name!r} not shown on the page\n{detail}"


def test_report_of_one_run(report_module: ModuleType, tmp_path: Path, chromium: Browser) -> None:
    run_id = train_run("nan-run", seed=0, lr=0.1, nan_step=NAN_STEP)
    out = report_module.write_report([run_id], tmp_path / "report.html")
    assert Path(out).is_file()

    report = check_page(Path(out), artifacts_dir() / "report-one-run.png", browser=chromium)
    keep(report, Path(out), "report-one-run")
    assert_clean_report(report, "nan-run")


def test_report_comparing_two_runs(
    report_module: ModuleType, tmp_path: Path, chromium: Browser
) -> None:
    first = train_run("nan-run", seed=0, lr=0.1, nan_step=NAN_STEP)
    second = train_run("clean-run", seed=1, lr=0.05, nan_step=None)
    out = report_module.write_report(
        [first, second], tmp_path / "compare.html", storage_path=str(Path(".tracer"))
    )
    assert Path(out).is_file()

    report = check_page(Path(out), artifacts_dir() / "report-two-runs.png", browser=chromium)
    keep(report, Path(out), "report-two-runs")
    assert_clean_report(report, "nan-run", "clean-run")


@needs_cli
def test_report_through_the_cli_renders_the_same(
    report_module: ModuleType, tmp_path: Path, chromium: Browser
) -> None:
    run_id = train_run("nan-run", seed=0, lr=0.1, nan_step=NAN_STEP)
    from_api = report_module.write_report([run_id], tmp_path / "api.html")
    from_cli = tmp_path / "cli.html"
    done = subprocess.run(
        [sys.executable, "-m", "tracer.cli", "report", run_id, "-o", str(from_cli)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 2 and "No such command 'report'" in done.stderr:
        pytest.skip("tracer.cli has no `report` command yet")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert from_cli.is_file()

    api = check_page(Path(from_api), tmp_path / "api.png", browser=chromium)
    cli = check_page(from_cli, artifacts_dir() / "report-cli.png", browser=chromium)
    keep(cli, from_cli, "report-cli")
    assert_clean_report(cli, "nan-run")
    assert (cli.title, len(cli.canvases), cli.drawn_canvas_count) == (
        api.title,
        len(api.canvases),
        api.drawn_canvas_count,
    ), f"CLI:\n{cli.describe()}\nAPI:\n{api.describe()}"


def test_report_charts_hover_zoom_and_mark_the_nan(
    report_module: ModuleType, tmp_path: Path, chromium: Browser
) -> None:
    """The report's charts are the dashboard's: hovering one shows the value under the
    cursor, a drag narrows every chart's x range (within the embedded points), double-click
    resets, the NaN step carries its marker; all offline, without an error."""
    run_id = train_run("nan-run", seed=0, lr=0.1, nan_step=NAN_STEP)
    out = Path(report_module.write_report([run_id], tmp_path / "report.html"))
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    try:
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url == out.as_uri()
                else (requests.append(route.request.url), route.abort())
            ),
        )
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(out.as_uri(), wait_until="load")
        page.wait_for_selector("body[data-drawn='true']")
        box = page.locator(".chart-box[data-metric='train/loss']")
        assert box.locator(".uplot canvas").count() == 1
        assert str(NAN_STEP) in box.get_attribute("data-nonfinite-steps").split()
        assert f"NaN at step {NAN_STEP}" in box.locator(".nonfinite-note").inner_text()

        over = box.locator(".u-over")
        area = over.bounding_box()
        assert area is not None
        page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] / 2)
        value = box.locator(".u-legend .u-series").nth(1).locator(".u-value").inner_text()
        assert value not in ("", "—") and float(value) > 0, value

        before = box.get_attribute("data-x-range")
        y = area["y"] + area["height"] / 2
        page.mouse.move(area["x"] + area["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] * 0.5, y, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => document.querySelector('#zoom-state').textContent.startsWith('steps')"
        )
        low, high = map(float, box.get_attribute("data-x-range").split())
        all_low, all_high = map(float, before.split())
        assert all_low < low < high < all_high, (before, low, high)
        other = page.locator(".chart-box[data-metric='train/accuracy']")
        assert list(map(float, other.get_attribute("data-x-range").split())) == [low, high]

        over.dblclick()
        page.wait_for_function(
            "() => document.querySelector('#zoom-state').textContent.startsWith('drag')"
        )
        assert box.get_attribute("data-x-range") == before
        page.screenshot(path=str(artifacts_dir() / "report-zoomed.png"))
    finally:
        context.close()
    assert errors == [] and requests == [], (errors, requests)


# The checker itself: a clean hand-written page passes, a page that misbehaves is caught.

_CLEAN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Fixture report</title></head>
<body><h1>Fixture</h1>
<svg width="400" height="200" aria-label="loss"><polyline fill="none" stroke="#1f77b4"
  points="0,190 100,120 200,80 300,60 400,50"/></svg>
<svg width="400" height="200" aria-label="flat"><line x1="0" y1="100" x2="400" y2="100"
  stroke="black"/></svg>
<svg width="400" height="200" aria-label="bars"><rect x="10" y="50" width="40" height="150"
  fill="teal"/><svg x="0" y="0" width="10" height="10"><circle cx="5" cy="5" r="4"/></svg></svg>
<svg width="400" height="200" aria-label="dots"><circle cx="50" cy="50" r="5" fill="red"/>
  <path d="M0 0 L400 200" stroke="gray"/></svg>
<svg width="400" height="200" aria-label="empty"></svg>
<svg width="400" height="200" aria-label="invisible"><path d="M0 0 L400 200"
  stroke="none" fill="none"/></svg>
<svg width="12" height="12" aria-label="swatch"><rect width="12" height="12" fill="blue"/></svg>
<img alt="inline" src="data:image/gif;base64,R0lGODlhAQABAAAAACwAAAAAAQABAAA=">
<canvas id="c" width="200" height="100"></canvas><canvas id="blank" width="50" height="50">
</canvas>
<script>document.getElementById("c").getContext("2d").fillRect(10, 10, 50, 50);</script>
</body></html>
"""

_BAD_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Bad page</title>
<script src="http://127.0.0.1:9/x.js"></script></head>
<body><svg width="400" height="200"><path d="M0 0 L400 200" stroke="black"/></svg>
<script>
console.error("negative control: something broke");
fetch("https://example.invalid/data.json").catch(() => {});
throw new Error("negative control: uncaught");
</script></body></html>
"""


def test_checker_passes_a_clean_self_contained_page(tmp_path: Path, chromium: Browser) -> None:
    page = tmp_path / "fixture.html"
    page.write_text(_CLEAN_PAGE, encoding="utf-8")

    report = check_page(
        page, artifacts_dir() / "checker-clean-fixture.png", width=900, browser=chromium
    )

    detail = report.describe()
    assert report.title == "Fixture report", detail
    assert (report.console_errors, report.page_errors, report.network_requests) == ([], [], [])
    assert report.requests == [report.url], detail  # data: URIs are not network requests
    assert report.svg_count == 7, detail  # the nested <svg> counts with its outer one
    assert [s.label for s in report.svgs if s.drawn] == ["loss", "flat", "bars", "dots", "swatch"]
    assert [s.label for s in report.charts()] == ["loss", "flat", "bars", "dots"], detail
    assert report.drawn_canvas_count == 1 and len(report.canvases) == 2, detail
    assert "Fixture" in report.text
    assert report.screenshot is not None
    assert report.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checker_flags_network_requests_and_errors(tmp_path: Path, chromium: Browser) -> None:
    """The negative control: had check_page missed these, the report tests would prove nothing."""
    page = tmp_path / "bad.html"
    page.write_text(_BAD_PAGE, encoding="utf-8")

    report = check_page(page, tmp_path / "bad.png", browser=chromium)

    detail = report.describe()
    assert "http://127.0.0.1:9/x.js" in report.network_requests, detail
    assert "https://example.invalid/data.json" in report.network_requests, detail
    assert any("negative control: something broke" in e for e in report.console_errors), detail
    assert any("negative control: uncaught" in e for e in report.page_errors), detail
    assert report.drawn_svg_count == 1 and not report.charts(min_width=500), detail
