"""SVG line charts built in Python, no scripts, no external refs: `tracer plot -o file.svg`.
(The HTML report draws with the dashboard's uPlot charts instead, `tracer.report.bundle`.)

Charts are drawn from already downsampled points (`tracer.analysis.downsample`): a line is its
points in step order, where NaN marks a gap, plus spans of non-finite values, drawn as red marks on
the plot's top edge (bottom edge for -inf) so a diverged run is visible at a glance. Every
number written into an attribute goes through `num`, so NaN or Inf never reach the markup.
Styling is presentation attributes only, so a chart looks the same inline and standalone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Optional

from tracer.analysis.downsample import Span, downsample

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_FIRST_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")  # matplotlib's tab10
PALETTE = (*_FIRST_COLORS, "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728")
NONFINITE_COLOR = "#d62728"
MARKER_COLOR = "#d62728"
LOG_Y_DECADES = 3.0
MAX_MARKERS = 300


@dataclass(frozen=True)
class Line:
    label: str
    steps: Sequence[int]
    values: Sequence[float]  # NaN = a gap in the line
    color: str = PALETTE[0]
    spans: Sequence[Span] = ()
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    """A vertical line at a step; `label` is its tooltip (an anomaly message)."""

    step: int
    label: str
    color: str = MARKER_COLOR
    strong: bool = True  # False (info anomalies): drawn faint


def num(value: float) -> str:
    """A coordinate for an attribute: never "nan" or "inf"."""
    if not math.isfinite(value):
        value = 0.0
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def fmt_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.6g}" if abs(value) >= 1e3 else f"{value:.4g}"


def fmt_step(step: float) -> str:
    magnitude = abs(step)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{step / size:.3g}{suffix}"
    return f"{step:.0f}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _y_domain(lines: Sequence[Line], log_y: Optional[bool]) -> tuple[float, float, bool]:
    finite = [v for line in lines for v in line.values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0, False
    low, high = min(finite), max(finite)
    if log_y is None:
        log_y = low > 0 and math.log10(high / low) > LOG_Y_DECADES
    if log_y and low > 0:
        return math.log10(low), math.log10(high), True
    if high == low:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad, False
    pad = (high - low) * 0.05
    return low - pad, high + pad, False


def _log_ticks(low: float, high: float) -> list[float]:
    first, last = math.floor(low), math.ceil(high)
    every = max(1, math.ceil((last - first) / 6))
    return [float(k) for k in range(first, last + 1, every) if low - 1e-9 <= k <= high + 1e-9]


def _path(points: Sequence[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{num(x)} {num(y)}" for x, y in points)


def _line_paths(line: Line, sx: Sequence[float], y_of: Callable[[float], float]) -> list[str]:
    """Path data of one line, one subpath per run of finite points."""
    segments: list[list[tuple[float, float]]] = [[]]
    for x, value in zip(sx, line.values, strict=True):
        if math.isfinite(value):
            segments[-1].append((x, y_of(value)))
        elif segments[-1]:
            segments.append([])
    return [_path(seg) for seg in segments if seg]


class _Frame:
    """The plot area of one chart and its step and value scales."""

    def __init__(
        self,
        width: int,
        height: int,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        log_y: bool,
        top: float,
    ) -> None:
        self.left, self.right, self.top, self.bottom = 62.0, width - 14.0, top, height - 36.0
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0], x_range[0] + 1)
        self.y0, self.y1 = y_range
        self.log_y = log_y

    def x(self, step: float) -> float:
        span = self.x1 - self.x0
        return self.left + (step - self.x0) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        if self.log_y:
            value = math.log10(value) if value > 0 else self.y0
        span = (self.y1 - self.y0) or 1.0
        return self.bottom - (value - self.y0) / span * (self.bottom - self.top)


def _axes(frame: _Frame, y_label: str) -> list[str]:
    out = [
        f'<rect x="{num(frame.left)}" y="{num(frame.top)}" '
        f'width="{num(frame.right - frame.left)}" height="{num(frame.bottom - frame.top)}" '
        'fill="#fcfcfd" stroke="#d0d4da"/>'
    ]
    y_ticks = _log_ticks(frame.y0, frame.y1) if frame.log_y else nice_ticks(frame.y0, frame.y1)
    for tick in y_ticks:
        y = frame.bottom - (tick - frame.y0) / ((frame.y1 - frame.y0) or 1.0) * (
            frame.bottom - frame.top
        )
        text = f"1e{tick:.0f}" if frame.log_y else fmt_value(tick)
        out.append(
            f'<line x1="{num(frame.left)}" x2="{num(frame.right)}" y1="{num(y)}" '
            f'y2="{num(y)}" stroke="#eceef1"/><text x="{num(frame.left - 6)}" '
            f'y="{num(y + 4)}" text-anchor="end">{escape(text)}</text>'
        )
    for tick in nice_ticks(frame.x0, frame.x1, 6):
        x = frame.x(tick)
        out.append(
            f'<line x1="{num(x)}" x2="{num(x)}" y1="{num(frame.top)}" '
            f'y2="{num(frame.bottom)}" stroke="#eceef1"/><text x="{num(x)}" '
            f'y="{num(frame.bottom + 15)}" text-anchor="middle">{fmt_step(tick)}</text>'
        )
    out.append(
        f'<text x="{num(frame.right)}" y="{num(frame.bottom + 30)}" text-anchor="end" '
        'fill="#6b7280">step</text>'
    )
    if y_label:
        out.append(
            f'<text x="{num(frame.left)}" y="{num(frame.top - 6)}" fill="#6b7280">'
            f"{escape(y_label)}</text>"
        )
    return out


def _spans(frame: _Frame, line: Line) -> list[str]:
    out = []
    for span in line.spans:
        x0, x1 = frame.x(span.first), frame.x(span.last)
        y = frame.bottom - 5 if span.kind == "-Inf" else frame.top
        where = f"step {span.first}" if span.count == 1 else f"steps {span.first}-{span.last}"
        tip = f"{line.label}: {span.kind} at {where} ({span.count} point(s))"
        out.append(
            f'<g class="nonfinite" data-step="{span.first}"><title>{escape(tip)}</title>'
            f'<rect x="{num(x0 - 2)}" y="{num(y)}" width="{num(max(x1 - x0, 0) + 4)}" '
            f'height="5" fill="{NONFINITE_COLOR}"/></g>'
        )
    return out


def _markers(frame: _Frame, markers: Sequence[Marker]) -> list[str]:
    """One line per step and colour; markers within two pixels share a line (tooltips
    joined), so thousands of anomalies stay a readable, bounded number of lines."""
    groups: dict[tuple[int, str], list[Marker]] = {}
    for marker in sorted(markers, key=lambda m: m.step):
        if frame.x0 <= marker.step <= frame.x1:
            pixel = int(frame.x(marker.step) / 2)
            groups.setdefault((pixel, marker.color), []).append(marker)
    out = []
    for (_, color), group in list(groups.items())[:MAX_MARKERS]:
        step = group[0].step
        x = num(frame.x(step))
        labels = list(dict.fromkeys(m.label for m in group))
        tip = "\n".join(labels[:10]) + (
            f"\n... and {len(labels) - 10} more" if len(labels) > 10 else ""
        )
        strong = any(m.strong for m in group)
        look = 'stroke-width="1.3" opacity="0.85"' if strong else 'stroke-width="1" opacity="0.35"'
        out.append(
            f'<g class="anomaly-marker" data-step="{step}"><title>{escape(tip)}</title>'
            f'<line x1="{x}" x2="{x}" y1="{num(frame.top)}" y2="{num(frame.bottom)}" '
            f'stroke="{color}" stroke-dasharray="4 3" {look}/>'
            f'<line x1="{x}" x2="{x}" y1="{num(frame.top)}" y2="{num(frame.bottom)}" '
            'stroke="transparent" stroke-width="7"/></g>'
        )
    return out


def _legend(lines: Sequence[Line], width: int) -> list[str]:
    out = []
    x = 62.0
    for line in lines:
        label = line.label if len(line.label) <= 48 else line.label[:47] + "…"
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        out.append(
            f'<g class="legend-item"><line x1="{num(x)}" x2="{num(x + 16)}" y1="28" y2="28" '
            f'stroke="{line.color}" stroke-width="2.5"{dash}/><text x="{num(x + 21)}" '
            f'y="32">{escape(label)}</text></g>'
        )
        x += 36 + 6.3 * len(label)
        if x > width - 60:
            break
    return out


def line_chart(
    title: str,
    lines: Sequence[Line],
    markers: Sequence[Marker] = (),
    *,
    width: int = 600,
    height: int = 260,
    x_range: Optional[tuple[float, float]] = None,
    y_label: str = "",
    log_y: Optional[bool] = None,
    standalone: bool = False,
) -> str:
    """Several lines over a shared step axis, anomaly markers, non-finite spans, a legend.

    `log_y=None` picks a log scale when every value is positive and they span more than three
    decades. `x_range` lets charts of one report share their step axis.
    """
    if x_range is None:
        steps = [s for line in lines if line.steps for s in (line.steps[0], line.steps[-1])]
        steps += [s for line in lines for span in line.spans for s in (span.first, span.last)]
        x_range = (min(steps), max(steps)) if steps else (0.0, 1.0)
    low, high, is_log = _y_domain(lines, log_y)
    frame = _Frame(width, height, x_range, (low, high), is_log, top=48.0)
    head = 'xmlns="http://www.w3.org/2000/svg" ' if standalone else ""
    out = [
        f'<svg {head}class="chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="{FONT}" font-size="11" fill="#374151" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="12" y="16" font-size="13" font-weight="600" fill="#111827">'
        f"{escape(title)}{' (log scale)' if is_log else ''}</text>",
        *_axes(frame, y_label),
    ]
    if len(lines) > 1 or (lines and lines[0].label != title):
        out.extend(_legend(lines, width))
    for line in lines:
        sx = [frame.x(s) for s in line.steps]
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        for data in _line_paths(line, sx, frame.y):
            out.append(
                f'<path class="series" d="{data}" fill="none" stroke="{line.color}" '
                f'stroke-width="1.5" stroke-linejoin="round"{dash}/>'
            )
        single = [
            (x, v)
            for i, (x, v) in enumerate(zip(sx, line.values, strict=True))
            if math.isfinite(v)
            and (i == 0 or not math.isfinite(line.values[i - 1]))
            and (i + 1 == len(line.values) or not math.isfinite(line.values[i + 1]))
        ]
        for x, value in single[:200]:  # isolated points: a path of one point draws nothing
            out.append(
                f'<circle cx="{num(x)}" cy="{num(frame.y(value))}" r="2" fill="{line.color}"/>'
            )
        out.extend(_spans(frame, line))
    out.extend(_markers(frame, markers))
    if not any(line.steps or line.spans for line in lines):
        out.append(
            f'<text x="{num(width / 2)}" y="{num(height / 2)}" text-anchor="middle">no data</text>'
        )
    out.append("</svg>")
    return "".join(out)


def standalone_line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[int], Sequence[float]]],
    markers: Sequence[tuple[int, str]] = (),
    width: int = 900,
    height: int = 360,
) -> str:
    """A complete SVG document (for `tracer plot RUN METRIC -o file.svg`); `series` are
    (label, steps, values), downsampled here; `markers` are (step, tooltip)."""
    lines = []
    for index, (label, steps, values) in enumerate(series):
        points = downsample(steps, values, buckets=width)
        lines.append(
            Line(label, points.steps, points.values, PALETTE[index % len(PALETTE)], points.spans)
        )
    body = line_chart(
        title,
        lines,
        [Marker(step, text) for step, text in markers],
        width=width,
        height=height,
        standalone=True,
    )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
