"""The live dashboard (`tracer ui`) in headless Chromium, against the real server and a real
training process writing to the same store while the page watches.

The server runs as `python -m tracer ui --storage <store> --port <port>` in its own process;
the store holds seeded runs (three small torch trainings to compare, one with a NaN batch, one
named like an HTML injection) and gets a live run from `live_training.py`, which pauses at
gates the test opens, so the page is known to be open before the steps and the NaN it must
show arrive. Every page is checked for: console errors and page errors (none), requests to
any host other than the server (none: each one is aborted and recorded), and dialogs (none).
Screenshots go to $TRACER_TEST_ARTIFACTS or <repo>/test-artifacts/; with
TRACER_UPDATE_DOCS_SCREENSHOTS=1 the run view is also saved as docs/ui-run-view.png.

Skips when starlette, uvicorn or playwright are missing, or while `tracer.ui.app` (the server)
does not exist yet.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pytest

import tracer
from tests.browser.trainings import train_mlp

pytest.importorskip("starlette", reason="the dashboard needs starlette (tracer-core[ui])")
pytest.importorskip("uvicorn", reason="the dashboard needs uvicorn (tracer-core[ui])")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if importlib.util.find_spec("tracer.ui.app") is None:
    pytest.skip(
        "tracer.ui.app (the dashboard's server) does not exist yet", allow_module_level=True
    )

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
LIVE_SCRIPT = Path(__file__).resolve().with_name("live_training.py")
SEEDED_PROJECT = "ui-seeded"
XSS = "<img src=x onerror=alert(1)>"
XSS_TAG = "<img src=x onerror=alert(2)>"
XSS_CONFIG = "<script>alert(3)</script>"
COMPARE_LRS = (0.02, 0.05, 0.2)
SEEDED_STEPS = 60
SEEDED_NAN_STEP = 17
LIVE_NAN_STEP = 25
LIVE_STEPS = 60
# A new step, anomaly or status must be on the page within 2 s of being stored; the trainer
# stores within its flush_interval (0.2 s) of closing a step.
LIVE_LATENCY_S = 2.0 + 0.2
SERVER_START_S = 60.0
TIMEOUT_MS = 30_000


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("TRACER_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the store and the server ------------------------------------------------------------------


def train_seeded(
    store: Path,
    name: str,
    *,
    lr: float,
    nan_step: Optional[int],
    tags: tuple[str, ...] = ("seeded",),
) -> str:
    """A small torch MLP trained for SEEDED_STEPS (`tests/browser/trainings.py`); at
    `nan_step` one input is NaN. Same seed for all: the curves start together and diverge by
    learning rate."""
    return train_mlp(
        steps=SEEDED_STEPS,
        lr=lr,
        seed=0,
        nan_step=nan_step,
        samples=256,
        project=SEEDED_PROJECT,
        run_name=name,
        storage_path=str(store),
        track_system_metrics=False,
        config={"lr": lr, "seed": 0, "batch_size": 32, "model": "mlp-8-16-1"},
        tags=list(tags),
    )


@dataclass
class Seeded:
    store: Path
    compare: list[str]  # run ids, by COMPARE_LRS
    nan_run: str
    xss_run: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    store = tmp_path_factory.mktemp("ui") / "store"
    compare = [
        train_seeded(store, f"lr-{lr}", lr=lr, nan_step=None, tags=("seeded", "compare"))
        for lr in COMPARE_LRS
    ]
    nan_run = train_seeded(store, "nan-batch", lr=0.05, nan_step=SEEDED_NAN_STEP)
    run = tracer.init(
        project="ui-escaping",
        run_name=XSS,
        storage_path=str(store),
        tags=[XSS_TAG],
        notes=XSS,
        config={"evil": XSS_CONFIG, "lr": 0.1},
        track_system_metrics=False,
    )
    for step in range(5):
        tracer.log({"loss": 1.0 / (step + 1)})
        tracer.step()
    tracer.finish()
    return Seeded(store=store, compare=compare, nan_run=nan_run, xss_run=run.run_id)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Dashboard:
    url: str
    store: Path

    def runs(self) -> list[dict[str, Any]]:
        return list(get_json(f"{self.url}/api/runs")["runs"])

    def run_id(self, name: str) -> str:
        ids = [row["run_id"] for row in self.runs() if row["name"] == name]
        assert len(ids) == 1, f"{len(ids)} runs named {name!r}"
        return ids[0]


@contextmanager
def serving(store: Path, log_dir: Path, *extra: str) -> Iterator[str]:
    """`tracer ui --storage <store> --port <free port> [extra]` in its own process; yields its
    URL once `/api/runs` answers (with the `--token` among `extra`, if any)."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "tracer",
        "ui",
        "--storage",
        str(store),
        "--port",
        str(port),
        *extra,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir)
    url = f"http://127.0.0.1:{port}"
    probe = f"{url}/api/runs"
    if "--token" in extra:
        probe += "?token=" + extra[extra.index("--token") + 1]
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"`tracer ui` exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                get_json(probe, timeout=2.0)
                break
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"`tracer ui` did not answer in {SERVER_START_S:.0f} s:\n"
                        + log_path.read_text()
                    )
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def dashboard(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`tracer ui` on the seeded store, until the module's tests are done."""
    with serving(seeded.store, tmp_path_factory.mktemp("ui-server")) as url:
        yield Dashboard(url=url, store=seeded.store)


# -- the browser side ----------------------------------------------------------------------------


@dataclass
class Watch:
    """What a page did: console errors, uncaught errors, requests (and those elsewhere), dialogs."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        detail = f"\n{self}"
        assert self.console_errors == [], detail
        assert self.page_errors == [], detail
        assert self.outside == [], detail
        assert self.dialogs == [], detail


@contextmanager
def open_page(
    browser: Browser, origin: str, width: int = 1400, height: int = 900
) -> Iterator[tuple[Page, Watch]]:
    """A fresh context whose requests to anything but `origin` are recorded and aborted."""
    watch = Watch(origin=origin)
    context = browser.new_context(
        viewport={"width": width, "height": height}, service_workers="block"
    )
    try:
        context.set_default_timeout(TIMEOUT_MS)

        def route(route: Any) -> None:
            url = route.request.url
            if url.startswith(origin + "/") or url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                watch.outside.append(url)
                route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on(
            "console",
            lambda m: (
                watch.console_errors.append(f"{m.text} {m.location}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        page.on("request", lambda request: watch.requests.append(request.url))
        page.on("websocket", lambda ws: watch.outside.append(ws.url))

        def on_dialog(dialog: Any) -> None:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        yield page, watch
    finally:
        context.close()


def row(page: Page, run_id: str) -> Any:
    return page.locator(f'#runs-table tbody tr[data-run-id="{run_id}"]')


def wait_text(page: Page, selector: str, expected: str, timeout_ms: int = TIMEOUT_MS) -> None:
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel);"
        " return !!e && e.textContent.trim() === text; }",
        arg=[selector, expected],
        timeout=timeout_ms,
    )


def painted_charts(page: Page) -> list[str]:
    """Metrics whose chart canvas has painted pixels."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll('.chart-box')].filter((box) => {
                const c = box.querySelector('canvas');
                if (!c || !c.width || !c.height) return false;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
                return false;
            }).map((box) => box.dataset.metric)"""
        )
    )


def load_every_chart(page: Page) -> None:
    """Charts load as they scroll into view: scroll through the page, then back to the top."""
    height = page.evaluate("document.documentElement.scrollHeight")
    for y in range(0, int(height) + 900, 600):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(80)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart-box')]"
        ".every((b) => b.hidden || b.querySelector('.u-over'))"
    )


# -- tests ---------------------------------------------------------------------------------------


def test_a_live_run_grows_and_its_nan_appears_without_reload(
    dashboard: Dashboard, chromium: Browser, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    trainer_log = tmp_path / "trainer.log"
    command = [
        sys.executable,
        str(LIVE_SCRIPT),
        "--storage",
        str(dashboard.store),
        "--gates",
        str(gates),
        "--name",
        "live-run",
        "--steps",
        str(LIVE_STEPS),
        "--nan-step",
        str(LIVE_NAN_STEP),
        "--pause-at",
        "10,20,40",
        "--step-seconds",
        "0.05",
    ]
    with open(trainer_log, "wb") as log:
        trainer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (gates / "done-9").exists():
            assert trainer.poll() is None, trainer_log.read_text()
            assert time.monotonic() < deadline, "the trainer did not reach step 10"
            time.sleep(0.05)
        run_id = dashboard.run_id("live-run")

        with open_page(chromium, dashboard.url) as (page, watch):
            page.goto(dashboard.url + "/")
            row(page, run_id).wait_for()
            steps_cell = f'#runs-table tr[data-run-id="{run_id}"] td[data-col="steps"]'
            wait_text(page, steps_cell, "10")
            page.evaluate("window.__sameDocument = true")

            # The runs table follows the run: 10 -> 20 steps without a reload.
            (gates / "go-10").touch()
            wait_text(page, steps_cell, "20")
            shown = time.time()
            assert shown - float((gates / "done-19").read_text()) < LIVE_LATENCY_S
            assert "running" in row(page, run_id).inner_text()
            assert not [u for u in watch.requests if "/series" in u or "/api/compare" in u], (
                "the runs view must not load metric histories"
            )
            page.screenshot(path=str(artifacts_dir() / "ui-runs-view.png"), full_page=True)

            # Into the run view (a hash change, same document): 20 steps, no anomaly yet.
            row(page, run_id).locator("a.run-link").click()
            wait_text(page, "#run-steps", "20")
            loss_chart = '.chart-box[data-metric="train/loss"]'
            page.wait_for_selector(f"{loss_chart} .u-over")
            assert page.locator(f'#anomalies-table tr[data-step="{LIVE_NAN_STEP}"]').count() == 0

            # Steps 20..39 arrive with the NaN at 25: a chart marker and an anomaly row, live.
            (gates / "go-20").touch()
            page.wait_for_selector(f'#anomalies-table tr[data-step="{LIVE_NAN_STEP}"]')
            page.wait_for_selector(f'{loss_chart}[data-nonfinite-steps~="{LIVE_NAN_STEP}"]')
            wait_text(page, "#run-steps", "40")
            latency = time.time() - float((gates / "done-39").read_text())
            assert latency < LIVE_LATENCY_S, f"step 40 shown {latency:.2f} s after it was stored"
            anomaly = page.locator(f'#anomalies-table tr[data-step="{LIVE_NAN_STEP}"]').inner_text()
            assert "critical" in anomaly, anomaly
            note = page.locator(f"{loss_chart} .chart-note").inner_text()
            assert f"NaN at step {LIVE_NAN_STEP}" in note, note
            assert "running" in page.locator("#run-header").inner_text()
            page.screenshot(path=str(artifacts_dir() / "ui-run-view-live.png"), full_page=False)

            # Clicking the anomaly zooms every chart to the episode (refetched at full resolution).
            page.locator(f'#anomalies-table tr[data-step="{LIVE_NAN_STEP}"]').click()
            page.wait_for_function(
                "() => document.querySelector('#zoom-state').textContent.startsWith('steps ')"
            )
            page.wait_for_function(
                "() => performance.getEntriesByType('resource')"
                ".some((e) => e.name.includes('/series') && e.name.includes('start='))"
            )

            # The run finishes: status and the last steps show, still without a reload.
            (gates / "go-40").touch()
            wait_text(page, "#run-steps", str(LIVE_STEPS))
            page.wait_for_function(
                "() => document.querySelector('#run-header .status').textContent === 'finished'"
            )
            assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
            watch.assert_clean()
        assert trainer.wait(timeout=60) == 0, trainer_log.read_text()
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(timeout=15)


def test_three_runs_compared(dashboard: Dashboard, seeded: Seeded, chromium: Browser) -> None:
    with open_page(chromium, dashboard.url) as (page, watch):
        page.goto(dashboard.url + "/")
        for run_id in seeded.compare:
            row(page, run_id).locator("td.select input").check()
        page.locator("#compare-button").click()
        page.wait_for_selector("#compare-charts .chart-box .u-over")
        page.wait_for_function(
            "() => document.querySelectorAll('#compare-runs .legend-run').length === 3"
        )
        legend = page.locator("#compare-charts .u-legend").inner_text()
        for lr in COMPARE_LRS:
            assert f"lr-{lr}" in legend, legend
        assert page.locator("#compare-metric").input_value() == "train/loss"
        assert (
            page.evaluate("document.querySelector('#compare-charts .chart-box').dataset.metric")
            == "train/loss"
        )
        assert painted_charts(page) == ["train/loss"]
        diff = page.locator("#config-diff-table").inner_text()
        assert "lr" in diff and all(str(lr) in diff for lr in COMPARE_LRS), diff
        assert "batch_size" not in diff, diff  # the same in all three
        divergence = page.locator("#divergence").inner_text()
        assert "train/loss" in divergence, divergence
        colors = page.evaluate(
            "[...document.querySelectorAll('#compare-runs .swatch')]"
            ".map((s) => s.style.backgroundColor)"
        )
        assert len(set(colors)) == 3 and all(colors), f"three runs, three colours: {colors}"
        page.screenshot(path=str(artifacts_dir() / "ui-compare-view.png"), full_page=True)
        watch.assert_clean()


def test_names_tags_and_config_from_a_run_are_text(
    dashboard: Dashboard, seeded: Seeded, chromium: Browser
) -> None:
    with open_page(chromium, dashboard.url) as (page, watch):
        page.goto(dashboard.url + "/")
        line = row(page, seeded.xss_run)
        line.wait_for()
        assert line.locator('td[data-col="name"]').inner_text() == XSS
        assert line.locator('td[data-col="tags"]').inner_text() == XSS_TAG
        assert line.locator('td[data-col="config:evil"]').inner_text() == XSS_CONFIG
        line.locator("a.run-link").click()
        page.wait_for_selector("#config-table")
        assert page.locator("#run-header h1").inner_text().startswith(XSS)
        assert XSS in page.locator("#run-header .notes").inner_text()
        assert XSS_CONFIG in page.locator("#config-table").inner_text()
        page.wait_for_selector('.chart-box[data-metric="loss"] .u-over')
        assert page.locator("img").count() == 0
        assert page.locator("main script").count() == 0
        page.wait_for_timeout(300)
        watch.assert_clean()


def test_the_token_goes_on_every_api_call(
    seeded: Seeded, chromium: Browser, tmp_path: Path
) -> None:
    """A server started with --token answers only requests that carry it: the page, opened
    with ?token=..., passes it on every API call and on the event stream."""
    with serving(seeded.store, tmp_path, "--token", "tok-123") as url:
        with pytest.raises(urllib.error.HTTPError):
            get_json(f"{url}/api/runs")
        with open_page(chromium, url) as (page, watch):
            page.goto(f"{url}/?token=tok-123#/run/{seeded.compare[0]}")
            page.wait_for_selector('.chart-box[data-metric="train/loss"] .u-over')
            page.wait_for_function(
                "() => document.querySelector('#live-state').textContent === 'live'"
            )
            api = [u for u in watch.requests if "/api/" in u]
            assert any("/api/events" in u for u in api), api
            assert api and all("token=tok-123" in u for u in api), api
            watch.assert_clean()


def test_run_view_of_a_finished_run_with_a_nan(
    dashboard: Dashboard, seeded: Seeded, chromium: Browser
) -> None:
    """Every section drawn; the screenshot the README shows (docs/ui-run-view.png)."""
    with open_page(chromium, dashboard.url, width=1400, height=1000) as (page, watch):
        page.goto(f"{dashboard.url}/#/run/{seeded.nan_run}")
        page.wait_for_selector('.chart-box[data-metric="train/loss"] .u-over')
        load_every_chart(page)
        charts = painted_charts(page)
        for metric in ("train/loss", "train/accuracy", "eval/loss", "grad/global_norm"):
            assert metric in charts, charts
        groups = page.evaluate(
            "[...document.querySelectorAll('.chart-group')].map((g) => g.dataset.group)"
        )
        assert groups[0] == "loss" and groups.index("grad") > groups.index("loss"), groups
        loss = page.locator('.chart-box[data-metric="train/loss"]')
        assert str(SEEDED_NAN_STEP) in (loss.get_attribute("data-nonfinite-steps") or "").split()
        assert page.locator(f'#anomalies-table tr[data-step="{SEEDED_NAN_STEP}"]').count() >= 1
        assert page.locator("#heatmap canvas.heatmap-canvas").count() == 1
        assert page.locator("#heatmap .heatmap-layer").count() >= 2
        assert page.locator("#checkpoints-table .last-healthy").count() == 1
        assert page.locator("#config-table").inner_text().count("lr") >= 1

        # Smoothing, x axis and log scale redraw without errors; hover shows values.
        page.locator("#smoothing").fill("0.8")
        page.locator("#x-axis").select_option("relative")
        page.locator("#log-scale").check()
        page.locator("#x-axis").select_option("step")
        page.locator("#log-scale").uncheck()
        box = page.locator('.chart-box[data-metric="train/loss"] .u-over').bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        legend = page.locator('.chart-box[data-metric="train/loss"] .u-legend').inner_text()
        assert any(ch.isdigit() for ch in legend), legend

        page.evaluate("window.scrollTo(0, 0)")
        shot = artifacts_dir() / "ui-run-view.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("TRACER_UPDATE_DOCS_SCREENSHOTS") == "1":
            (REPO / "docs").mkdir(exist_ok=True)
            shutil.copyfile(shot, REPO / "docs" / "ui-run-view.png")
        watch.assert_clean()


def test_runs_table_filters_sorts_and_picks_columns(
    dashboard: Dashboard, seeded: Seeded, chromium: Browser
) -> None:
    with open_page(chromium, dashboard.url) as (page, watch):
        page.goto(dashboard.url + "/")
        row(page, seeded.compare[0]).wait_for()

        def shown() -> list[str]:
            return list(
                page.evaluate(
                    "[...document.querySelectorAll('#runs-table tbody tr[data-run-id]')]"
                    ".map((r) => r.dataset.runId)"
                )
            )

        page.locator("#filter-search").fill("lr=0.2")
        assert shown() == [seeded.compare[2]]
        page.locator("#filter-search").fill("compare")  # a tag
        assert sorted(shown()) == sorted(seeded.compare)
        page.locator("#filter-search").fill("")
        page.locator("#filter-project").select_option("ui-escaping")
        assert shown() == [seeded.xss_run]
        page.locator("#filter-project").select_option("")
        page.locator("#filter-status").select_option("failed")
        assert page.locator("#runs-table tbody td.empty").count() == 1
        page.locator("#filter-status").select_option("")

        # Sort by a config column, both ways (the three compared runs: three learning rates).
        page.locator("#filter-search").fill("compare")
        page.locator('th[data-col="config:lr"]').click()
        assert shown() == seeded.compare  # by COMPARE_LRS, ascending
        page.locator('th[data-col="config:lr"]').click()
        assert shown() == seeded.compare[::-1]
        page.locator("#filter-search").fill("")
        page.locator("#filter-project").select_option(SEEDED_PROJECT)

        # Config columns: by default the keys that differ; the user can add one.
        headers = page.locator("#runs-table thead").inner_text()
        assert "lr" in headers and "batch_size" not in headers, headers
        page.locator(".columns-picker summary").click()
        page.locator(".columns-menu label", has_text="batch_size").locator("input").check()
        assert "batch_size" in page.locator("#runs-table thead").inner_text()
        watch.assert_clean()


def test_drag_zooms_the_charts_and_double_click_resets(
    dashboard: Dashboard, seeded: Seeded, chromium: Browser
) -> None:
    with open_page(chromium, dashboard.url) as (page, watch):
        page.goto(f"{dashboard.url}/#/run/{seeded.compare[1]}")
        over = page.locator('.chart-box[data-metric="train/loss"] .u-over')
        over.wait_for()
        box = over.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.25, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=6)
        page.mouse.up()
        page.wait_for_function(
            "() => document.querySelector('#zoom-state').textContent.startsWith('steps ')"
        )
        # The zoom refetches the window from the server, at full resolution.
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').map((e) => e.name)"
            ".some((n) => n.includes('metric=train%2Floss') && n.includes('start='))"
        )
        over.dblclick()
        page.wait_for_function(
            "() => document.querySelector('#zoom-state').textContent.startsWith('drag')"
        )
        watch.assert_clean()


def test_page_leaks_no_globals_and_smooths_like_tensorboard(
    dashboard: Dashboard, chromium: Browser
) -> None:
    with open_page(chromium, dashboard.url) as (page, watch):
        page.goto(dashboard.url + "/static/vendor/README.md")
        baseline = set(page.evaluate("Object.keys(window)"))
        page.goto(dashboard.url + "/")
        page.wait_for_selector("#runs-table")
        leaked = set(page.evaluate("Object.keys(window)")) - baseline
        assert leaked == set(), leaked

        values = [1.0, None, 3.0, 2.0, 8.0, 4.0]
        weight = 0.6
        smoothed = page.evaluate(
            "async ([values, w]) => (await import('/static/charts.js')).smooth(values, w)",
            [values, weight],
        )
        expected: list[Optional[float]] = []
        last, count = 0.0, 0
        for value in values:  # TensorBoard's EMA, debiased by 1 - w^n
            if value is None:
                expected.append(None)
                continue
            last = last * weight + (1 - weight) * value
            count += 1
            expected.append(last / (1 - weight**count))
        assert smoothed == pytest.approx(expected), smoothed
        watch.assert_clean()
