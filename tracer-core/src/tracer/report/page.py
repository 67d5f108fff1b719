"""The report page: run cards and banners written here as HTML, and everything drawn (charts,
heatmap, anomaly, checkpoint, sample and config tables) drawn in the browser by the
dashboard's own modules from the run data embedded in the page.

One file, nothing fetched: uPlot, the shared modules and the report's script are inlined
(`tracer.report.bundle`), the data is a `<script type="application/json">` block. Every
stored string (names, messages, config) reaches the HTML through `html.escape`, and the JSON
block has `<`, `>` and `&` written as `\\u003c`, `\\u003e`, `\\u0026`, so no run string can close
the tag; the page's script shows every string as text (`escape.js`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any, Optional

from tracer.report.bundle import bundle, shared_css
from tracer.report.data import POINTS, RunData
from tracer.report.style import CSS

DATA_ID = "tracer-report-data"

STATUS_COLORS = {
    "finished": ("#166534", "#dcfce7"),
    "running": ("#1e40af", "#dbeafe"),
    "failed": ("#991b1b", "#fee2e2"),
    "killed": ("#92400e", "#fef3c7"),
    "crashed": ("#ffffff", "#b91c1c"),
}


def _when(timestamp: Optional[float]) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


def _duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _status(status: str) -> str:
    fg, bg = STATUS_COLORS.get(status, ("#374151", "#e5e7eb"))
    return f'<span class="status" style="color:{fg};background:{bg}">{escape(status)}</span>'


def _first_nonfinite(run: RunData, metrics: bool = True, prefix: str = "") -> str:
    """Callout naming the first non-finite gradient (step and layer) and metrics."""
    parts = []
    first = run.first_nonfinite_gradient
    if first is not None:
        layers = first["layers"]
        extra = f" ({len(layers)} layer(s) non-finite: {', '.join(layers[:8])})" if layers else ""
        parts.append(
            f'<div class="banner first-nonfinite" data-step="{first["step"]}">{escape(prefix)}'
            f"First non-finite gradient at <b>step {first['step']}</b>, first layer "
            f"<b>{escape(str(first['first_layer']))}</b>{escape(extra)}</div>"
        )
    if metrics and run.first_nonfinite_metrics:
        listed = ", ".join(
            f"{escape(name)} ({kind} at step {step})"
            for name, step, kind in run.first_nonfinite_metrics[:6]
        )
        parts.append(f'<div class="banner">First non-finite values: {listed}</div>')
    return "".join(parts)


def run_card(run: RunData) -> str:
    record, summary = run.record, run.summary
    status = record["status"]
    rows = [
        ("Run id", escape(record["run_id"])),
        ("Project", escape(record["project_name"])),
        ("Status", _status(status)),
        ("Started", _when(record["start_time"])),
        ("Ended", _when(record["end_time"]) if record["end_time"] else "— (no end recorded)"),
        ("Duration", _duration(summary.get("duration"))),
        ("Total steps", f"{record['total_steps']:,}"),
        ("Rank / world size", f"{record['rank']} / {record['world_size']}"),
        ("Host", escape(str(record["host"] or "—"))),
        ("Tags", "".join(f'<span class="tag">{escape(t)}</span>' for t in record["tags"]) or "—"),
        ("Anomalies", _anomaly_counts(summary.get("anomaly_counts") or {})),
        ("Checkpoints", str(summary.get("checkpoints", 0))),
    ]
    if run.last_healthy is not None:
        saved = run.last_healthy
        where = escape(str(saved.get("path", "")))
        rows.append(("Last healthy save", f"step {saved['step']} {where}"))
        if saved.get("pinned_path"):
            rows.append(("Pinned at", escape(str(saved["pinned_path"]))))
    if record["notes"]:
        rows.append(("Notes", escape(record["notes"])))
    banner = ""
    if status == "crashed":
        banner = (
            '<div class="banner crashed"><b>Crashed:</b> the process stopped without finishing '
            f"the run; last heartbeat {_when(record['heartbeat'])}.</div>"
        )
    if record["error"]:
        banner += f'<div class="banner"><b>Error:</b> {escape(record["error"])}</div>'
    details = []
    if summary.get("summary"):
        text = json.dumps(summary["summary"], indent=2, sort_keys=True, default=str)
        details.append(
            f"<details><summary>Run summary</summary><pre>{escape(text)}</pre></details>"
        )
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return (
        f'<div class="card run-header" data-run-id="{escape(record["run_id"])}">'
        f'<h3><span class="swatch" style="background:{run.color}"></span>'
        f"{escape(run.label)} {_status(status)}</h3>{banner}<dl>{body}</dl>{''.join(details)}</div>"
    )


def _anomaly_counts(counts: dict[str, int]) -> str:
    if not counts:
        return '<span class="ok">none</span>'
    return ", ".join(f"{escape(k)}: {v}" for k, v in sorted(counts.items()))


def embedded_json(payload: Any) -> str:
    """`payload` as the text of a `<script type="application/json">` block: strict JSON (a
    NaN that slipped past the encoders raises), with `<`, `>` and `&` escaped."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


CHART_CONTROLS = (
    '<div class="toolbar chart-controls" id="chart-controls">'
    '<label>smoothing <input id="smoothing" type="range" min="0" max="0.99" step="0.01" '
    'value="0"> <output id="smoothing-value">0</output></label>'
    '<label>x axis <select id="x-axis"><option value="step">step</option>'
    '<option value="wall">wall time</option><option value="relative">relative time</option>'
    "</select></label>"
    '<label><input id="log-scale" type="checkbox"> log scale</label>'
    '<button type="button" id="zoom-reset">Reset zoom</button>'
    '<span id="zoom-state" class="muted"></span></div>'
)


def page(runs: Sequence[RunData], generator: str) -> str:
    two = len(runs) > 1
    title = " vs ".join(run.label for run in runs)

    def per_run(box: str, before: Callable[[RunData], str] = lambda run: "") -> str:
        """A container per run that the script fills (`box-0`, `box-1`), headed by the run's
        name when there are two."""
        parts = []
        for index, run in enumerate(runs):
            head = (
                f'<h3><span class="swatch" style="background:{run.color}"></span> '
                f"{escape(run.label)}</h3>"
                if two
                else ""
            )
            parts.append(
                f'<div class="per-run" data-run-id="{escape(run.run_id)}">{head}{before(run)}'
                f'<div id="{box}-{index}"></div></div>'
            )
        return "".join(parts)

    charts = (
        f"{CHART_CONTROLS}"
        f'<p class="muted">Hover a chart for values; drag across it to zoom. The file holds up '
        f"to {POINTS} points per series (min and max per bucket, every NaN/Inf kept): zooming "
        "narrows the view of those points, there is no server to fetch the full history from "
        "(<code>tracer ui</code> does).</p>"
        '<div id="charts-area"><noscript>The charts are drawn by the script in this file: '
        "allow JavaScript to see them.</noscript></div>"
    )

    def prefix(run: RunData) -> str:
        return f"{run.label}: " if two else ""

    sections = [
        (
            "overview",
            "Runs" if two else "Run",
            f'<div class="cards">{"".join(map(run_card, runs))}</div>',
        ),
        ("charts", "Charts", charts),
        (
            "gradients",
            "Per-layer gradient norms",
            "".join(_first_nonfinite(run, False, prefix(run)) for run in runs) + per_run("heatmap"),
        ),
        ("anomalies", "Anomalies", per_run("anomalies", lambda r: _first_nonfinite(r, True))),
        ("checkpoints", "Checkpoints", per_run("checkpoints")),
        ("samples", "Batch samples at anomalies", per_run("samples")),
        ("config", "Config", per_run("config")),
    ]
    data = {"points": POINTS, "runs": [run.embedded() for run in runs]}
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Tracer report: {escape(title)}</title>"
        f"<style>{shared_css()}\n{CSS}</style></head><body>"
        f'<header class="top"><h1>Tracer report · {escape(title)}</h1><nav>{nav}</nav></header>'
        f"<main>{body}</main><footer>{escape(generator)}</footer>"
        f'<script type="application/json" id="{DATA_ID}">{embedded_json(data)}</script>'
        f"<script>\n{bundle()}\n</script></body></html>\n"
    )
