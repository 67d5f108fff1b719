"""`tracer.report`: the self-contained HTML report, read back as a browser would parse it.

Runs are made through the public training API (`tracer.init/log/step/finish`, and for the
gradient sections a tiny torch model under `tracer.watch` with a NaN fed in), except the
crashed run, which needs a dead pid and is written straight through `StorageBackend`. The
page is parsed with `html.parser` into a small tree: the run cards and banners are HTML, the
charts and tables are drawn in the browser from the embedded JSON block (checked here as
data; tests/browser/test_report_in_chromium.py checks the drawing).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

import pytest

import tracer
from tests.core.helpers import open_store
from tracer.analysis import QueryEngine
from tracer.analysis.downsample import downsample
from tracer.exceptions import RunNotFoundError
from tracer.report import render_report, standalone_line_chart, write_report
from tracer.report.bundle import BundleError, bundle, module_body
from tracer.report.page import DATA_ID
from tracer.storage.liveness import this_host

SECTIONS = ("overview", "charts", "gradients", "anomalies", "checkpoints", "samples", "config")
SVG_NS = "http://www.w3.org/2000/svg"
NAN_STEP = 23


# -- a parsed page ----------------------------------------------------------------------------
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    content: list[str | Node] = field(default_factory=list)  # text and children, in order

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: Optional[str] = None, **attrs: str) -> list[Node]:
        """Descendants with this tag and attributes; `class_` matches one class."""
        wanted_class = attrs.pop("class_", None)
        return [
            node
            for node in self.walk()
            if (tag is None or node.tag == tag)
            and all(node.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            and (wanted_class is None or wanted_class in node.attrs.get("class", "").split())
        ]

    def find(self, tag: Optional[str] = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]

    def all_text(self) -> str:
        return "".join(p if isinstance(p, str) else p.all_text() for p in self.content)


class _TreeBuilder(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        self.stack[-1].content.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        self.stack[-1].content.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].content.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def fields(header: Node) -> dict[str, str]:
    """The header's <dt>/<dd> pairs."""
    names = [dt.all_text() for dt in header.find_all("dt")]
    return dict(zip(names, (dd.all_text() for dd in header.find_all("dd")), strict=True))


def scripts(page: Node) -> tuple[str, str]:
    """(the JSON block's text, the inline script's text): the page's only two scripts."""
    found = page.find_all("script")
    assert [s.attrs.get("type") for s in found] == ["application/json", None]
    assert found[0].attrs["id"] == DATA_ID and "src" not in found[1].attrs
    return found[0].all_text(), found[1].all_text()


def embedded(page: Node) -> dict[str, Any]:
    return json.loads(scripts(page)[0])  # type: ignore[no-any-return]


def assert_self_contained(html: str, *allowed: str) -> None:
    """Nothing in the page can make a browser fetch anything: outside the scripts no src=,
    href= (but to its own sections), url(), @import or embedded document; in the scripts no
    fetch, XHR, event source, socket or dynamic import; the only http(s) URLs (but `allowed`)
    are in comments of the inlined uPlot source."""
    for line in html.splitlines():
        if any(url not in allowed for url in re.findall(r"https?://[^\s\"'<>)]*", line)):
            assert line.strip().startswith(("//", "*")), line
    outside = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.DOTALL).lower()
    for needle in ("<link", "<img", "@import", "url(", "<iframe", "<object", "<embed"):
        assert needle not in outside, needle
    assert set(re.findall(r'href="([^"]*)"', outside)) <= {f"#{s}" for s in SECTIONS}
    code = "".join(re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL))
    for call in ("fetch(", "XMLHttpRequest", "EventSource", "WebSocket", "import(", "sendBeacon"):
        assert call not in code, call


def check(html: str) -> Node:
    """The checks every report passes: one parseable, self-contained document with every
    section, a JSON block that parses as strict JSON, and the bundled chart code."""
    assert html.startswith("<!DOCTYPE html>")
    assert_self_contained(html)
    page = parse(html)
    for section in SECTIONS:
        page.find("section", id=section)
    data_text, script = scripts(page)
    json.loads(data_text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert "MIT" in script and "class MetricChart" in script and "renderHeatmap" in script
    return page


def report(*runs: str) -> str:
    with QueryEngine("./.tracer") as query:
        return render_report(query, list(runs))


# -- runs -------------------------------------------------------------------------------------
def plain_run(
    name: str, steps: int = 60, nan_at: Optional[int] = None, scale: float = 1.0, **kwargs: Any
) -> str:
    """A run through the public API: loss (NaN at `nan_at`), accuracy every 10 steps."""
    run = tracer.init(
        project="report",
        run_name=name,
        track_system_metrics=False,
        checkpoint_interval=10,
        **kwargs,
    )
    for step in range(steps):
        loss = math.nan if step == nan_at else scale * (2.0 - step / steps)
        metrics = {"loss": loss}
        if step % 10 == 0:
            metrics["val/accuracy"] = step / steps
        tracer.log(metrics)
        tracer.step()
    tracer.finish()
    return run.run_id


def torch_nan_run(name: str = "torch-nan", steps: int = 40) -> tuple[str, list[str]]:
    """A tiny torch training under `tracer.watch`, with a NaN in the input at `NAN_STEP`;
    returns the run id and the watched layer names."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(
        project="report",
        run_name=name,
        checkpoint_interval=5,
        capture_samples=2,
        write_buffer_size=1,  # each step flushed: the NaN step's batch is still kept
        tags=["torch", "nan"],
        config={"lr": 0.05, "model": {"hidden": 16}},
    )
    tracer.watch(model, optimizer)
    for step in range(steps):
        optimizer.zero_grad()
        batch = torch.randn(8, 4)
        if step == NAN_STEP:
            batch[0, 0] = float("nan")
        loss = nn.functional.mse_loss(model(batch), torch.randn(8, 3))
        loss.backward()
        optimizer.step()
        tracer.log({"loss": loss.item()})
        tracer.step()
    tracer.finish()
    layers = [name for name, _ in model.named_parameters()]
    return run.run_id, layers


# -- one plain run ----------------------------------------------------------------------------
def test_report_of_one_run_shows_its_header_and_embeds_its_series_and_anomalies() -> None:
    """Header fields in HTML; the embedded data is the dashboard API's: the run's detail and
    one series object per metric, the NaN kept as a marker at its step."""
    run_id = plain_run("plain", nan_at=17, tags=["baseline", "v2"], config={"lr": 0.1, "batch": 32})
    page = check(report(run_id))
    header = page.find("div", class_="run-header")
    assert header.find("h3").all_text().split() == ["plain", "finished"]
    shown = fields(header)
    assert shown["Run id"] == run_id and shown["Project"] == "report"
    assert shown["Status"] == "finished" and shown["Total steps"] == "60"
    assert shown["Rank / world size"] == "0 / 1" and shown["Tags"] == "baselinev2"
    assert shown["Started"] != "—" and shown["Ended"] != "—" and shown["Duration"] != "—"

    data = embedded(page)
    (run,) = data["runs"]
    assert run["label"] == "plain" and run["color"] == "#1f77b4"
    assert run["detail"]["run"]["run_id"] == run_id
    assert run["detail"]["run"]["config"] == {"lr": 0.1, "batch": 32}
    assert set(run["series"]) == {"loss", "val/accuracy"}  # _timestamp is hidden
    loss = run["series"]["loss"]
    assert loss["steps"] == list(range(60)) and loss["count"] == 60 and not loss["reduced"]
    assert loss["values"][17] is None and loss["nonfinite"] == [{"step": 17, "kind": "NaN"}]
    assert loss["values"][0] == 2.0 and all(t is not None for t in loss["times"])
    assert run["series"]["val/accuracy"]["steps"] == list(range(0, 60, 10))
    (anomaly,) = run["detail"]["anomalies"]
    assert (anomaly["step"], anomaly["anomaly_type"]) == (17, "nan_or_inf")
    assert {c["step"] for c in run["detail"]["checkpoints"]} >= {17}
    assert page.find("div", id="anomalies-0") and page.find("div", id="heatmap-0")
    assert "First non-finite values: loss (NaN at step 17)" in page.all_text()
    assert "there is no server" in page.find("section", id="charts").all_text()


def test_report_of_a_crashed_run_says_so_in_its_header() -> None:
    """A run whose process died reads "crashed": shown as a red status badge and banner."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    start = time.time() - 100.0
    with open_store() as store:
        store.create_run(
            "dead", "report", "dead-run", start, {}, host=this_host(), pid=child.pid,
            heartbeat_interval=10.0,
        )  # fmt: skip
        store.write_metrics("dead", {"loss": ([0, 1, 2], [1.0, 0.5, 0.25])})
        store.update_run("dead", heartbeat=start + 42.0, total_steps=3)
    page = check(report("dead-run"))
    header = page.find("div", class_="run-header")
    badge = header.find("span", class_="status")
    assert badge.all_text() == "crashed" and "#b91c1c" in badge.attrs["style"]
    assert header.find_all("div", class_="crashed")
    assert fields(header)["Duration"] == "42.0s"  # to the last heartbeat


def test_hostile_run_strings_stay_text_in_the_html_and_inside_the_json_block() -> None:
    """A run name, tag and config that try to close the script tag or inject markup: the HTML
    shows them escaped, the JSON block holds them as \\u003c..., and parses back to them."""
    name = "<img src=x onerror=alert(1)>"
    closer = "</script><script>alert(1)</script>"
    plain_run(name, steps=5, tags=[closer], config={"note": "<b>bold</b> & " + closer})
    html = report(name)
    page = check(html)
    outside = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.DOTALL)
    assert "<img" not in outside and "<b>bold</b>" not in html
    assert html.lower().count("<script") == 2 and html.lower().count("</script") == 2
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    data_text, _ = scripts(page)
    assert "<" not in data_text and ">" not in data_text and "&" not in data_text
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in data_text
    (run,) = embedded(page)["runs"]
    assert run["label"] == name and run["detail"]["run"]["name"] == name
    assert run["detail"]["run"]["tags"] == [closer]
    assert run["detail"]["run"]["config"]["note"] == "<b>bold</b> & " + closer


# -- two runs ---------------------------------------------------------------------------------
def test_two_runs_are_embedded_together_with_their_colours_and_cards() -> None:
    plain_run("alpha", nan_at=30)
    plain_run("beta", steps=80, scale=0.5)
    page = check(report("alpha", "beta"))
    headers = page.find_all("div", class_="run-header")
    assert [h.find("h3").all_text().split()[0] for h in headers] == ["alpha", "beta"]
    runs = embedded(page)["runs"]
    assert [(r["label"], r["color"]) for r in runs] == [("alpha", "#1f77b4"), ("beta", "#ff7f0e")]
    assert [len(r["series"]["loss"]["steps"]) for r in runs] == [60, 80]
    assert [r["series"]["loss"]["nonfinite"] for r in runs] == [[{"step": 30, "kind": "NaN"}], []]
    anomalies = page.find("section", id="anomalies")
    assert [h.all_text().strip() for h in anomalies.find_all("h3")] == ["alpha", "beta"]
    assert page.find("div", id="anomalies-1")


def test_a_report_shows_one_or_two_runs_that_exist() -> None:
    plain_run("only", steps=5)
    with QueryEngine("./.tracer") as query:
        with pytest.raises(ValueError):
            render_report(query, [])
        with pytest.raises(ValueError):
            render_report(query, ["only", "only", "only"])
        with pytest.raises(RunNotFoundError):
            render_report(query, ["missing"])


def test_write_report_reads_the_default_storage_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `storage_path` the report reads where runs write: TRACER_STORAGE_PATH."""
    monkeypatch.setenv("TRACER_STORAGE_PATH", str(tmp_path / "elsewhere"))
    plain_run("moved", steps=5)
    path = write_report(["moved"], tmp_path / "reports" / "r.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(RunNotFoundError):
        write_report(["moved"], tmp_path / "r2.html", storage_path=str(tmp_path / "empty"))


# -- long runs --------------------------------------------------------------------------------
def test_a_200k_step_run_with_a_diverged_tail_stays_small() -> None:
    """Each series is reduced to about a thousand points (every NaN/Inf kept): the page stays
    small, the non-finite tail is marked from its first step."""
    tracer.init(project="report", run_name="long", track_system_metrics=False)
    total, bad_from = 200_000, 150_000
    for step in range(total):
        loss = 2.0 - step / total + (step % 7) * 1e-3
        if step >= bad_from:
            loss = math.inf if step % 2 else math.nan
        tracer.log({"loss": loss, "lr": 1e-3 * (1 - step / total) + 1e-9})
        tracer.step()
    tracer.finish()
    html = report("long")
    assert len(html.encode()) < 2_000_000
    (run,) = embedded(check(html))["runs"]
    loss = run["series"]["loss"]
    assert loss["reduced"] and loss["count"] == total and len(loss["steps"]) <= 2_500
    assert "mins" not in loss and "maxs" not in loss  # not drawn: left out of the file
    assert loss["nonfinite"][0]["step"] == bad_from
    assert {m["kind"] for m in loss["nonfinite"]} == {"NaN", "+Inf"}


def test_downsample_keeps_spikes_and_every_nonfinite_stretch() -> None:
    count = 1_000_000
    values = [1.0] * count
    values[123_457] = 50.0  # a one-step spike
    values[700_001] = -math.inf
    for index in range(900_000, 900_010):
        values[index] = math.nan
    points = downsample(range(count), values, buckets=500)
    assert len(points.steps) <= 2 * 500 + 10 and points.count == count
    assert 123_457 in points.steps and max(v for v in points.values if v == v) == 50.0
    kinds = [(s.kind, s.first, s.last, s.count) for s in points.spans]
    assert kinds == [("-Inf", 700_001, 700_001, 1), ("NaN", 900_000, 900_009, 10)]


def test_standalone_chart_is_a_valid_svg_document() -> None:
    svg = standalone_line_chart(
        "loss <train>",
        [("run-a", [0, 1, 2, 3], [1.0, math.nan, 0.5, math.inf]), ("run-b", [0, 3], [2.0, 1.0])],
        markers=[(2, "spike & co")],
    )
    root = ET.fromstring(svg.split("\n", 1)[1])
    assert root.tag == f"{{{SVG_NS}}}svg"
    assert_self_contained(svg, SVG_NS)
    titles = [t.text for t in root.iter(f"{{{SVG_NS}}}title")]
    assert "loss <train>" in titles and "spike & co" in titles


def test_the_bundle_scopes_each_module_and_refuses_forms_it_does_not_know() -> None:
    """Imports become references to modules bundled before, exports a returned object; an
    import of a module not bundled yet, or an unknown form, fails the build."""
    text = 'import { a, b as c } from "./x.js";\nexport function f() {}\nexport { f as default };'
    body = module_body("y.js", text, ["x.js"])
    assert 'const { a, b: c } = __modules["x.js"];' in body
    assert "\nfunction f() {}" in body and "return { f, default: f };" in body
    with pytest.raises(BundleError):
        module_body("y.js", text, [])
    with pytest.raises(BundleError):
        module_body("y.js", "export * from './x.js';", ["x.js"])
    with pytest.raises(BundleError):
        module_body("y.js", 'import "./x.js";', ["x.js"])
    assert module_body("y.js", "/*\nexport function old() {}\n*/", []).endswith(
        "return {  };\n})();"
    )
    script = bundle()
    assert script.startswith("/* Tracer report") and "Permission is hereby granted" in script
    assert re.findall(r"\n(?:import|export) [^\n]*", script) == [
        "\nexport function costlyLerp(i, idx0, idx1, _dirX, dataY) {"  # in uPlot's /* */
    ]


# -- a watched torch model --------------------------------------------------------------------
def test_report_of_a_torch_run_embeds_gradients_heatmap_nan_layer_and_samples() -> None:
    """The NaN step is named with its first non-finite layer; the heatmap has one row per
    watched layer with the NaN column marked; the batch captured at the NaN step is there,
    its NaN input flagged."""
    run_id, layers = torch_nan_run()
    page = check(report(run_id))
    banner = page.find("section", id="gradients").find("div", class_="first-nonfinite")
    assert banner.attrs["data-step"] == str(NAN_STEP)
    assert f"step {NAN_STEP}" in banner.all_text() and "first layer 0.weight" in banner.all_text()
    (run,) = embedded(page)["runs"]
    assert {"loss", "grad/global_norm", "grad/max_abs"} <= set(run["series"])
    assert {"step": NAN_STEP, "kind": "NaN"} in run["series"]["grad/global_norm"]["nonfinite"]
    heatmap = run["detail"]["heatmap"]
    assert heatmap["layers"] == layers
    bad_columns = {column for column, _, _ in heatmap["nonfinite"]}
    assert len(heatmap["steps"]) - 1 in bad_columns and 0 not in bad_columns
    samples = [s for s in run["detail"]["samples"] if s["step"] == NAN_STEP]
    assert {s["role"] for s in samples} >= {"output"} and any(s["nonfinite"] for s in samples)
    assert any("0.weight" in (a["subject"] or "") for a in run["detail"]["anomalies"])


def test_torch_run_overlaid_on_a_plain_run() -> None:
    run_id, layers = torch_nan_run("watched")
    plain_run("unwatched", steps=40)
    runs = embedded(check(report(run_id, "unwatched")))["runs"]
    assert [r["label"] for r in runs] == ["watched", "unwatched"]
    assert [r["detail"]["heatmap"]["layers"] for r in runs] == [layers, []]


def test_system_metrics_of_a_short_run_come_from_its_checkpoints() -> None:
    """A run shorter than the system sampling interval has system metrics only in its
    checkpoints; the report still embeds them as series (charted in the System group)."""
    tracer.init(project="report", run_name="sys", checkpoint_interval=5)
    for _ in range(12):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    (run,) = embedded(check(report("sys")))["runs"]
    rss = run["series"]["system/process_rss_mb"]
    assert rss["category"] == "system" and rss["steps"] and rss["steps"][0] >= 0
