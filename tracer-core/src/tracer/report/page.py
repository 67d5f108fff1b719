"""The report page: run headers, charts, heatmaps, anomaly and sample tables, in one HTML file.

Everything is inline (style, SVG) and every stored string (names, messages, config) goes
through `html.escape`, so a hostile run name cannot inject markup and the file loads nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from html import escape
from typing import Any, Optional

from tracer.report.data import RunData, category
from tracer.report.heatmap import heatmap
from tracer.report.style import CSS
from tracer.report.svg import PALETTE, Line, Marker, fmt_value, line_chart

STATUS_COLORS = {
    "finished": ("#166534", "#dcfce7"),
    "running": ("#1e40af", "#dbeafe"),
    "failed": ("#991b1b", "#fee2e2"),
    "killed": ("#92400e", "#fef3c7"),
    "crashed": ("#ffffff", "#b91c1c"),
}
SEVERITY_COLORS = {"critical": "#d62728", "warning": "#d97706", "info": "#2563eb"}
MAX_TABLE_ROWS = 500
SAMPLE_ROWS, SAMPLE_COLUMNS = 8, 12


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
    details = [
        f"<details><summary>Config ({len(record['config'])} keys)</summary>"
        f"<pre>{escape(json.dumps(record['config'], indent=2, sort_keys=True, default=str))}"
        "</pre></details>"
    ]
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


def chart_key(name: str) -> tuple[str, str]:
    """(chart, line suffix): per-rank series share one chart, one line per rank."""
    if name.startswith("rank/"):
        parts = name.split("/", 2)
        if len(parts) == 3:
            return f"rank/*/{parts[2]}", f"rank {parts[1]}"
    return name, ""


def _placement(anomaly: dict[str, Any], run: RunData) -> str:
    """The chart an anomaly is marked on: its subject's, else (a layer, the run as a whole)
    the global gradient norm's."""
    subject = anomaly.get("subject") or ""
    if subject in run.series:
        return chart_key(subject)[0]
    return "grad/global_norm"


def _markers_for(key: str, runs: Sequence[RunData]) -> list[Marker]:
    markers = []
    for run in runs:
        for anomaly in run.anomalies:
            if _placement(anomaly, run) != key:
                continue
            prefix = f"{run.label}: " if len(runs) > 1 else ""
            text = (
                f"{prefix}step {anomaly['step']} [{anomaly['severity']}] "
                f"{anomaly['anomaly_type']}: {anomaly['message']}"
            )
            severity = anomaly["severity"]
            color = run.color if len(runs) > 1 else SEVERITY_COLORS.get(severity, "#d62728")
            markers.append(Marker(int(anomaly["step"]), text, color, severity != "info"))
    return markers


def charts(
    runs: Sequence[RunData], section: str, x_range: tuple[float, float], wide: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """(chart key, svg) of every chart of a section: one chart per series name (per-rank
    series grouped), a line per run that has it (and per rank)."""
    keys: dict[str, None] = {}
    for run in runs:
        for name in run.series:
            if category(name) == section:
                keys[chart_key(name)[0]] = None
    ordered = sorted(keys, key=lambda k: ("loss" not in k.lower(), k.startswith("rank/"), k))
    out = []
    for key in ordered:
        lines = []
        for run_index, run in enumerate(runs):
            names = [n for n in run.series if chart_key(n)[0] == key]
            for line_index, name in enumerate(names):
                points = run.series[name]
                suffix = chart_key(name)[1]
                if len(runs) > 1:
                    label = f"{run.label} {suffix}".strip()
                    color = run.color if len(names) == 1 else PALETTE[line_index % len(PALETTE)]
                else:
                    label = suffix or name
                    color = PALETTE[line_index % len(PALETTE)]
                lines.append(
                    Line(label, points.steps, points.values, color, points.spans, run_index == 1)
                )
        is_wide = key in wide
        svg = line_chart(
            key,
            lines,
            _markers_for(key, runs),
            width=1200 if is_wide else 600,
            height=300 if is_wide else 250,
            x_range=x_range if len(runs) == 1 else None,  # two runs: this chart's steps
        )
        out.append((key, svg))
    return out


def _grid(items: Sequence[tuple[str, str]], wide: Iterable[str] = ()) -> str:
    if not items:
        return '<p class="muted">Nothing recorded.</p>'
    wide = set(wide)
    cells = "".join(
        f'<div class="panel{" wide" if key in wide else ""}" data-chart="{escape(key)}">{svg}</div>'
        for key, svg in items
    )
    return f'<div class="grid">{cells}</div>'


def gradients_section(runs: Sequence[RunData], x_range: tuple[float, float]) -> str:
    wide = ("grad/global_norm",)
    two = len(runs) > 1
    parts = [_first_nonfinite(run, False, f"{run.label}: " if two else "") for run in runs]
    parts.append(_grid(charts(runs, "gradient", x_range, wide), wide))
    for run in runs:
        hm = run.heatmap
        title = "Per-layer gradient norm over checkpoints"
        if len(runs) > 1:
            title += f": {run.label}"
        if not hm.layers:
            parts.append(
                f'<p class="muted">{escape(title)}: no per-layer gradient statistics '
                "(no watched model, or no checkpoint yet).</p>"
            )
            continue
        svg = heatmap(title, hm.layers, hm.steps, hm.norms, tooltips=True)
        parts.append(f'<div class="panel heatmap-panel" style="margin-top:12px">{svg}</div>')
    return "".join(parts)


def _num_cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{escape(str(value))}</td>"
    text = fmt_value(float(value))
    bad = "" if math.isfinite(value) else " bad"
    return f'<td class="num{bad}">{text}</td>'


def anomaly_table(run: RunData) -> str:
    if not run.anomalies:
        return '<p class="ok">No anomalies detected.</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Step",
            "Type",
            "Severity",
            "Subject",
            "Value",
            "Baseline",
            "Threshold",
            "Message",
            "Detector",
            "Checkpoint",
        )
    )
    rows = []
    for anomaly in run.anomalies[:MAX_TABLE_ROWS]:
        color = SEVERITY_COLORS.get(anomaly["severity"], "#374151")
        checkpoint = anomaly.get("checkpoint_step")
        rows.append(
            f'<tr class="anomaly-row" data-step="{anomaly["step"]}">'
            f'<td class="num">{anomaly["step"]}</td><td>{escape(anomaly["anomaly_type"])}</td>'
            f'<td class="sev" style="color:{color}">{escape(anomaly["severity"])}</td>'
            f"<td>{escape(anomaly.get('subject') or '')}</td>"
            + "".join(_num_cell(anomaly[k]) for k in ("value", "baseline", "threshold"))
            + f"<td>{escape(anomaly['message'])}</td><td>{escape(anomaly['detector'])}</td>"
            f'<td class="num">{"—" if checkpoint is None else checkpoint}</td></tr>'
        )
    more = len(run.anomalies) - MAX_TABLE_ROWS
    note = f'<p class="muted">{more} more anomalies not shown.</p>' if more > 0 else ""
    table = f'<table class="anomalies"><tr>{head}</tr>{"".join(rows)}</table>'
    return f'<div class="scroll">{table}</div>{note}'


def _flat(row: Any) -> list[Any]:
    if isinstance(row, list):
        return [v for item in row for v in _flat(item)]
    return [row]


def samples_section(run: RunData) -> str:
    if not run.samples:
        return '<p class="muted">No samples were captured at anomaly steps.</p>'
    parts = []
    for step, samples in run.samples.items():
        why = [a for a in run.anomalies if a["step"] == step]
        reason = "; ".join(f"{a['anomaly_type']}: {a['message']}" for a in why[:3])
        parts.append(
            f'<div class="sample-step" data-step="{step}"><h4>Step {step}'
            f' <span class="muted">{escape(reason)}</span></h4>'
        )
        for sample in samples:
            shape = " x ".join(str(d) for d in sample["shape"])
            rows = sample["values"] if isinstance(sample["values"], list) else [sample["values"]]
            body = []
            for row in rows[:SAMPLE_ROWS]:
                flat = _flat(row)
                cells = "".join(_num_cell(v) for v in flat[:SAMPLE_COLUMNS])
                if len(flat) > SAMPLE_COLUMNS:
                    cells += f'<td class="muted">… {len(flat) - SAMPLE_COLUMNS} more</td>'
                body.append(f"<tr>{cells}</tr>")
            cut = " (truncated)" if sample["truncated"] else ""
            parts.append(
                f"<p><b>{escape(sample['role'])}</b> <code>{escape(sample['name'])}</code> "
                f'<span class="muted">shape {escape(shape)}, {escape(sample["dtype"])}, '
                f"{escape(sample['reason'])} capture{cut}</span></p>"
                f'<div style="overflow-x:auto"><table class="sample">{"".join(body)}</table></div>'
            )
        parts.append("</div>")
    return "".join(parts)


def page(runs: Sequence[RunData], x_range: tuple[float, float], generator: str) -> str:
    two = len(runs) > 1
    title = " vs ".join(run.label for run in runs)

    def per_run(render: Callable[[RunData], str]) -> str:
        if not two:
            return render(runs[0])
        return "".join(
            f'<h3><span class="swatch" style="background:{run.color}"></span> '
            f"{escape(run.label)}</h3>{render(run)}"
            for run in runs
        )

    sections = [
        (
            "overview",
            "Runs" if two else "Run",
            f'<div class="cards">{"".join(map(run_card, runs))}</div>',
        ),
        ("metrics", "Metrics", _grid(charts(runs, "metric", x_range))),
        ("gradients", "Gradients", gradients_section(runs, x_range)),
        ("system", "System", _grid(charts(runs, "system", x_range))),
        (
            "anomalies",
            "Anomalies",
            per_run(lambda r: _first_nonfinite(r) + anomaly_table(r)),
        ),
        ("samples", "Samples at anomaly steps", per_run(samples_section)),
    ]
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Tracer report: {escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>Tracer report · {escape(title)}</h1><nav>{nav}</nav></header>'
        f"<main>{body}</main><footer>{escape(generator)}</footer></body></html>\n"
    )
