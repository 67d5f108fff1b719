"""Notebook display: a run's summary, a comparison and an anomaly list as small HTML tables
with inline SVG sparklines, what Jupyter shows for `_repr_html_` (`analysis/results.py`).

Everything a run stored is escaped (`html.escape`, quotes included: run, project and metric
names are the user's and may hold markup); the SVG carries only numbers. Nothing refers to
anything outside the cell (no script, stylesheet, font or image URL), so the output renders
offline and in a notebook viewer that blocks requests. Sparklines are drawn from the same
reduction as every other view (`analysis/downsample.py`): non-finite points break the line
and are marked in red at their steps.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from tracer.analysis.downsample import downsample
from tracer.exceptions import StorageError

logger = logging.getLogger(__name__)

# (run_id, metric) -> (steps, values) of the whole history; None when sparklines are off.
HistoryLoader = Callable[[str, str], tuple[Sequence[int], Sequence[float]]]
Histories = Optional[HistoryLoader]
WIDTH, HEIGHT = 120, 24
MAX_ROWS = 30  # metric rows shown for a run before "+ n more"
COLORS = ("#1f77b4", "#ff7f0e")
BAD = "#d62728"
HIDDEN_PREFIXES = ("_", "grad/", "system/", "optimizer/", "rank/")
_STYLE = (
    "border-collapse:collapse;font:12px/1.3 monospace;"
    " text-align:left"  # inline, so the table needs no stylesheet
)
_CELL = "padding:1px 8px;border-bottom:1px solid #ddd;vertical-align:middle"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
        return f"{value:.6g}"
    return esc("-" if value is None else value)


def sparkline(
    lines: Sequence[tuple[Sequence[int], Sequence[float]]],
    marks: Sequence[int] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An inline SVG of one or more histories on shared axes; `marks` are steps drawn as
    vertical ticks (an anomaly's start). Empty string when nothing is drawable."""
    reduced = [downsample(steps, values, buckets=width // 2) for steps, values in lines]
    finite = [v for points in reduced for v in points.values if v == v]
    steps = [s for points in reduced for s in points.steps] + list(marks)
    if not steps:
        return ""
    x_low, x_high = min(steps), max(steps)
    y_low, y_high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    x_span, y_span = (x_high - x_low) or 1, (y_high - y_low) or 1.0

    def x(step: float) -> str:
        return f"{1 + (step - x_low) / x_span * (width - 2):.1f}"

    def y(value: float) -> str:
        return f"{height - 2 - (value - y_low) / y_span * (height - 4):.1f}"

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for color, points in zip(COLORS * len(reduced), reduced, strict=False):
        segment: list[tuple[str, str]] = []
        for step, value in [*zip(points.steps, points.values, strict=False), (0, math.nan)]:
            if value == value:
                segment.append((x(step), y(value)))
                continue
            if len(segment) > 1:
                coordinates = " ".join(f"{px},{py}" for px, py in segment)
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1"'
                    f' points="{coordinates}"/>'
                )
            elif segment:  # a lone finite point between gaps
                px, py = segment[0]
                parts.append(f'<circle cx="{px}" cy="{py}" r="1" fill="{color}"/>')
            segment = []
        for span in points.spans:
            left, right = x(span.first), x(span.last)
            parts.append(
                f'<rect x="{left}" y="0" width="{max(float(right) - float(left), 1.0):.1f}"'
                f' height="{height}" fill="{BAD}" opacity="0.6"/>'
            )
    for step in marks:
        parts.append(
            f'<line x1="{x(step)}" x2="{x(step)}" y1="0" y2="{height}" stroke="{BAD}"'
            ' stroke-dasharray="2,1"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _history(
    histories: Histories, run_id: str, metric: str
) -> Optional[tuple[Sequence[int], Sequence[float]]]:
    """A history for a sparkline, or None (no loader, a closed store, no such metric)."""
    if histories is None:
        return None
    try:
        steps, values = histories(run_id, metric)
    except StorageError as error:  # the engine was closed: the table without curves
        logger.debug("no sparkline for %s of %s: %s", metric, run_id, error)
        return None
    return (steps, values) if len(steps) else None


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already (escaped by the callers)."""
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row) + "</tr>"
        for row in rows
    )
    return (
        f'<table style="{_STYLE}"><caption style="text-align:left;font-weight:bold">'
        f"{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def run_html(summary: Mapping[str, Any], histories: Histories) -> str:
    """A run (`QueryEngine.get_run_summary`): who and how it went, then its metrics with the
    final and best values and a sparkline each (Tracer's own series left out)."""
    counts = summary.get("anomaly_counts") or {}
    anomalies = ", ".join(f"{n} {esc(kind)}" for kind, n in sorted(counts.items())) or "none"
    caption = (
        f"{esc(summary.get('run_name'))} <small>({esc(summary.get('run_id'))},"
        f" {esc(summary.get('project_name'))}) {esc(summary.get('status'))},"
        f" {esc(summary.get('total_steps'))} steps, {number(summary.get('duration'))} s;"
        f" anomalies: {anomalies}</small>"
    )
    finals = summary.get("final_metrics") or {}
    bests = summary.get("best_metrics") or {}
    shown = [name for name in finals if not str(name).startswith(HIDDEN_PREFIXES)]
    rows = []
    for name in shown[:MAX_ROWS]:
        history = _history(histories, str(summary.get("run_id")), name)
        rows.append(
            [
                esc(name),
                number(finals[name]),
                number(bests.get(name)),
                sparkline([history]) if history else "",
            ]
        )
    if len(shown) > MAX_ROWS:
        rows.append([f"+ {len(shown) - MAX_ROWS} more", "", "", ""])
    return _table(caption, ["metric", "final", "best", "history"], rows)


def comparison_html(comparison: Mapping[str, Any], histories: Histories) -> str:
    """A comparison (`QueryEngine.compare_runs`): per metric both finals, the delta, the
    first divergence, and both curves on one sparkline (run 1 blue, run 2 orange)."""
    first, second = str(comparison.get("run1")), str(comparison.get("run2"))
    caption = (
        f'<span style="color:{COLORS[0]}">{esc(first)}</span> vs'
        f' <span style="color:{COLORS[1]}">{esc(second)}</span>'
    )
    rows = []
    for name, result in (comparison.get("metrics") or {}).items():
        lines = [h for h in (_history(histories, r, name) for r in (first, second)) if h]
        rows.append(
            [
                esc(name),
                number(result["run1"]["final"]),
                number(result["run2"]["final"]),
                number(result["delta"]),
                number(result["first_divergence_step"]),
                sparkline(lines) if lines else "",
            ]
        )
    header = ["metric", "run 1 final", "run 2 final", "delta", "diverges at", "history"]
    return _table(caption, header, rows)


def anomalies_html(anomalies: Sequence[Mapping[str, Any]], histories: Histories) -> str:
    """An anomaly list (`QueryEngine.get_anomalies`): one row per episode, with its subject's
    history and the episode's start marked."""
    rows = []
    for anomaly in anomalies:
        history = _history(histories, str(anomaly.get("run_id")), str(anomaly.get("subject")))
        steps = f"{esc(anomaly.get('step'))}"
        if anomaly.get("end_step") not in (None, anomaly.get("step")):
            steps += f"-{esc(anomaly.get('end_step'))}"
        rows.append(
            [
                steps,
                esc(anomaly.get("severity")),
                esc(anomaly.get("anomaly_type")),
                esc(anomaly.get("subject")),
                esc(anomaly.get("message")),
                esc(anomaly.get("hint")),
                sparkline([history], [int(anomaly["step"])]) if history else "",
            ]
        )
    caption = f"{len(rows)} anomal{'y' if len(rows) == 1 else 'ies'}"
    header = ["steps", "severity", "type", "subject", "message", "what to try", "history"]
    return _table(caption, header, rows)
