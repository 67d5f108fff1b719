"""Notebook display: what `QueryEngine` returns for a run's summary, a comparison and an
anomaly list still behaves as the dict or list it was, and renders (`_repr_html_`) as a small
table with inline SVG sparklines, every stored name escaped, nothing fetched from outside.
Needs no optional library (the HTML is written by hand)."""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from tracer.analysis import QueryEngine
from tracer.config import TracerConfig
from tracer.storage import StorageBackend, open_storage

HOSTILE = '<script>alert("x")</script>&\'"'
METRIC = 'loss<img src=x onerror="alert(1)">'


@pytest.fixture
def query() -> Iterator[QueryEngine]:
    """Two runs with hostile names and metric names, NaN and Inf in a history, one anomaly."""
    store: StorageBackend = open_storage(TracerConfig(project_name="writer"))
    now = time.time()
    for run_id in ("r1", "r2"):
        store.create_run(run_id, HOSTILE, f"{HOSTILE}-{run_id}", now, {"lr": 0.1})
        values = [1.0 / (s + 1) for s in range(100)]
        if run_id == "r2":
            values[50:53] = [math.nan, math.inf, -math.inf]
        store.write_metrics(run_id, {METRIC: (list(range(100)), values), "acc": ([5], [0.5])})
    store.write_anomalies(
        [
            {
                "run_id": "r2", "step": 50, "anomaly_type": "nan_or_inf", "severity": "critical",
                "subject": METRIC, "value": math.nan, "baseline": 0.02, "threshold": 0.0,
                "message": f"NaN in {HOSTILE}", "detector": "nonfinite", "end_step": 52,
                "count": 3, "open": False, "hint": "<lower> the lr",
            }
        ]
    )  # fmt: skip
    store.close()
    engine = QueryEngine(storage_path="./.tracer")
    yield engine
    engine.close()


class _Page(HTMLParser):
    """Collects the tags and attributes of an HTML fragment, to prove what it contains."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def check_safe(html: str) -> _Page:
    """Only table and SVG markup; no script, image, link or URL of any kind; the hostile
    strings appear escaped only."""
    page = parse(html)
    allowed = {
        "table", "caption", "small", "thead", "tbody", "tr", "th", "td", "span", "svg",
        "polyline", "circle", "rect", "line",
    }  # fmt: skip
    assert set(page.tags) <= allowed, set(page.tags) - allowed
    assert not [name for name, _ in page.attributes if name.startswith("on")]
    assert not [name for name, _ in page.attributes if name in ("src", "href", "xlink:href")]
    assert not [value for _, value in page.attributes if re.search(r"//|url\(", value)]
    assert "http" not in html
    assert "<script>" not in html and "<img" not in html
    return page


ESCAPED_NAME = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;"
ESCAPED_METRIC = "loss&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"


def test_run_summary_is_the_dict_and_a_table(query: QueryEngine) -> None:
    summary = query.get_run_summary("r2")
    assert isinstance(summary, dict) and summary["run_id"] == "r2"
    assert json.loads(json.dumps(summary, default=str))["run_name"] == f"{HOSTILE}-r2"
    html = summary._repr_html_()
    page = check_safe(html)
    assert page.tags.count("svg") == 2  # one sparkline per metric
    assert ESCAPED_NAME in html and ESCAPED_METRIC in html
    assert "1 nan_or_inf" in html  # the anomaly counts, by type


def test_comparison_draws_both_runs(query: QueryEngine) -> None:
    comparison = query.compare_runs("r1", "r2", [METRIC])
    assert comparison["metrics"][METRIC]["first_divergence_step"] == 50
    html = comparison._repr_html_()
    page = check_safe(html)
    assert ESCAPED_METRIC in html
    assert page.tags.count("svg") == 1
    assert page.tags.count("polyline") >= 2  # one line per run (r2's broken at its NaN)
    assert ("fill", "#d62728") in page.attributes  # the non-finite stretch is marked


def test_anomaly_list_marks_the_episode(query: QueryEngine) -> None:
    anomalies = query.get_anomalies("r2")
    assert isinstance(anomalies, list) and anomalies[0]["step"] == 50
    assert anomalies == [dict(a) for a in anomalies]
    html = anomalies._repr_html_()
    check_safe(html)
    assert ESCAPED_NAME in html and ESCAPED_METRIC in html  # in the message, the subject
    assert "50-52" in html and "&lt;lower&gt; the lr" in html
    assert "<line" in html  # the episode's start on its subject's curve
    assert query.get_anomalies("r1")._repr_html_().count("<tr>") == 1  # header only


def test_a_closed_engine_still_renders_without_curves(query: QueryEngine) -> None:
    summary = query.get_run_summary("r1")
    query.close()
    html = summary._repr_html_()
    check_safe(html)
    assert "<svg" not in html and "acc" in html


def test_copies_and_pickles_carry_the_data_only(query: QueryEngine) -> None:
    """A deep copy or a pickle must not try to copy the engine's open store."""
    summary = query.get_run_summary("r2")
    anomalies = query.get_anomalies("r2")
    for original in (summary, anomalies, query.compare_runs("r1", "r2", ["acc"])):
        for copied in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
            assert repr(copied) == repr(original) and type(copied) is type(original)
            assert "<svg" not in copied._repr_html_()
