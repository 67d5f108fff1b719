"""`tracer.report`: the self-contained HTML report, read back as a browser would parse it.

Runs are made through the public training API (`tracer.init/log/step/finish`, and for the
gradient sections a tiny torch model under `tracer.watch` with a NaN fed in), except the
crashed run, which needs a dead pid and is written straight through `StorageBackend`. The
page is parsed with `html.parser` into a small tree; assertions name sections, charts and
markers by the ids, classes and data- attributes the page sets for that purpose.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
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
from tracer.storage.liveness import this_host

SECTIONS = ("overview", "metrics", "gradients", "system", "anomalies", "samples")
SVG_NS = "http://www.w3.org/2000/svg"
NUMERIC_ATTRIBUTES = {"x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height", "d"}
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


def chart(page: Node, key: str) -> Node:
    return page.find("div", data_chart=key)


def fields(header: Node) -> dict[str, str]:
    """The header's <dt>/<dd> pairs."""
    names = [dt.all_text() for dt in header.find_all("dt")]
    return dict(zip(names, (dd.all_text() for dd in header.find_all("dd")), strict=True))


def marker_steps(node: Node) -> set[int]:
    return {int(g.attrs["data-step"]) for g in node.find_all("g", class_="anomaly-marker")}


def assert_self_contained(html: str) -> None:
    """Nothing in the page can make a browser fetch anything."""
    assert set(re.findall(r"https?://[^\s\"'<>)]*", html)) <= {SVG_NS}
    lowered = html.lower()
    for needle in ("<script src", "<link", "<img", "@import", "url(", "<iframe", "<object"):
        assert needle not in lowered, needle


def assert_svg_numbers_finite(page: Node) -> None:
    for svg in page.find_all("svg"):
        for node in svg.walk():
            for name, value in node.attrs.items():
                if name in NUMERIC_ATTRIBUTES or name == "viewbox":
                    assert not re.search(r"nan|inf", value, re.IGNORECASE), (node.tag, name, value)


def check(html: str) -> Node:
    """The checks every report passes: parseable, self-contained, finite SVG numbers, every
    section present."""
    assert html.startswith("<!DOCTYPE html>")
    assert_self_contained(html)
    page = parse(html)
    assert_svg_numbers_finite(page)
    for section in SECTIONS:
        page.find("section", id=section)
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
def test_report_of_one_run_shows_its_header_curves_and_anomalies() -> None:
    """Header fields, one chart per metric with the NaN marked at its step (anomaly line and
    non-finite mark), the anomaly table row, and the self-containment checks."""
    run_id = plain_run("plain", nan_at=17, tags=["baseline", "v2"], config={"lr": 0.1, "batch": 32})
    html = report(run_id)
    page = check(html)
    header = page.find("div", class_="run-header")
    assert header.find("h3").all_text().split() == ["plain", "finished"]
    shown = fields(header)
    assert shown["Run id"] == run_id and shown["Project"] == "report"
    assert shown["Status"] == "finished" and shown["Total steps"] == "60"
    assert shown["Rank / world size"] == "0 / 1" and shown["Tags"] == "baselinev2"
    assert shown["Started"] != "—" and shown["Ended"] != "—" and shown["Duration"] != "—"
    assert '"lr": 0.1' in header.find("details").all_text()

    loss = chart(page, "loss")
    assert marker_steps(loss) == {17}
    assert {int(g.attrs["data-step"]) for g in loss.find_all("g", class_="nonfinite")} == {17}
    assert "loss is nan" in loss.find("g", class_="anomaly-marker").find("title").all_text()
    chart(page, "val/accuracy")
    assert not page.find_all("div", data_chart="_timestamp")

    rows = page.find("section", id="anomalies").find_all("tr", class_="anomaly-row")
    assert [(r.attrs["data-step"], "nan_or_inf" in r.all_text()) for r in rows] == [("17", True)]
    assert "First non-finite values: loss (NaN at step 17)" in page.all_text()


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


def test_run_names_and_messages_are_escaped() -> None:
    name = '<script>alert("x")</script>'
    plain_run(name, steps=5, config={"note": "<b>bold</b>"})
    html = report(name)
    check(html)
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;" in html


# -- two runs ---------------------------------------------------------------------------------
def test_two_runs_are_overlaid_with_both_names_in_each_shared_legend() -> None:
    plain_run("alpha", nan_at=30)
    plain_run("beta", steps=80, scale=0.5)
    page = check(report("alpha", "beta"))
    headers = page.find_all("div", class_="run-header")
    assert [h.find("h3").all_text().split()[0] for h in headers] == ["alpha", "beta"]
    for key in ("loss", "val/accuracy"):
        legend = {
            g.all_text().strip() for g in chart(page, key).find_all("g", class_="legend-item")
        }
        assert legend == {"alpha", "beta"}
        assert len(chart(page, key).find_all("path", class_="series")) >= 2
    assert marker_steps(chart(page, "loss")) == {30}
    anomalies = page.find("section", id="anomalies")
    assert [h.all_text().strip() for h in anomalies.find_all("h3")] == ["alpha", "beta"]
    assert "No anomalies detected." in anomalies.all_text()


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
    """Downsampling keeps the page small; the non-finite tail is one mark, not 50k."""
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
    page = check(html)
    loss = chart(page, "loss")
    spans = loss.find_all("g", class_="nonfinite")
    assert 1 <= len(spans) <= 4 and min(int(g.attrs["data-step"]) for g in spans) == bad_from
    assert marker_steps(loss) >= {bad_from}
    assert "(log scale)" in chart(page, "lr").all_text()


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
    assert_self_contained(svg)
    assert_svg_numbers_finite(parse(svg.split("\n", 1)[1]))
    titles = [t.text for t in root.iter(f"{{{SVG_NS}}}title")]
    assert "loss <train>" in titles and "spike & co" in titles


# -- a watched torch model --------------------------------------------------------------------
def test_report_of_a_torch_run_shows_gradients_heatmap_nan_layer_and_samples() -> None:
    """The NaN step is named with its first non-finite layer, marked on the loss and global
    norm charts; the heatmap has one row per watched layer with the NaN columns in red; the
    batch captured at the NaN step is shown, its NaN input flagged."""
    run_id, layers = torch_nan_run()
    page = check(report(run_id))
    banner = page.find("section", id="gradients").find("div", class_="first-nonfinite")
    assert banner.attrs["data-step"] == str(NAN_STEP)
    assert f"step {NAN_STEP}" in banner.all_text() and "first layer 0.weight" in banner.all_text()
    assert NAN_STEP in marker_steps(chart(page, "loss"))
    assert NAN_STEP in marker_steps(chart(page, "grad/global_norm"))
    chart(page, "grad/max_abs")

    rows = page.find("svg", class_="heatmap").find_all("g", class_="hm-row")
    assert [row.attrs["data-layer"] for row in rows] == layers
    for row in rows:
        fills = [rect.attrs["fill"] for rect in row.find_all("rect")]
        assert fills[0] != "#d62728" and fills[-1] == "#d62728"

    samples = page.find("section", id="samples").find("div", class_="sample-step")
    assert samples.attrs["data-step"] == str(NAN_STEP)
    assert "arg0" in samples.all_text() and "output" in samples.all_text()
    assert samples.find_all("td", class_="bad")
    table_rows = page.find("section", id="anomalies").find_all("tr", class_="anomaly-row")
    assert any("0.weight" in row.all_text() for row in table_rows)


def test_torch_run_overlaid_on_a_plain_run() -> None:
    run_id, layers = torch_nan_run("watched")
    plain_run("unwatched", steps=40)
    page = check(report(run_id, "unwatched"))
    legend = {g.all_text().strip() for g in chart(page, "loss").find_all("g", class_="legend-item")}
    assert legend == {"watched", "unwatched"}
    assert len(page.find("svg", class_="heatmap").find_all("g", class_="hm-row")) == len(layers)
    assert "unwatched: no per-layer gradient statistics" in page.all_text()


def test_system_metrics_of_a_short_run_come_from_its_checkpoints() -> None:
    """A run shorter than the system sampling interval has system metrics only in its
    checkpoints; the System section still charts them."""
    tracer.init(project="report", run_name="sys", checkpoint_interval=5)
    for _ in range(12):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    page = check(report("sys"))
    system = page.find("section", id="system")
    keys: Sequence[str] = [d.attrs["data-chart"] for d in system.find_all("div", class_="panel")]
    assert "system/process_rss_mb" in keys
