"""Chart primitives for the report: SVG strings built in Python, no scripts, no external refs.

Charts are drawn from already downsampled points (`tracer.report.data`): a line is its points
in step order, where NaN marks a gap, plus spans of non-finite values, drawn as red marks on
the plot's top edge (bottom edge for -inf) so a diverged run is visible at a glance. Every
number written into an attribute goes through `_num`, so NaN or Inf never reach the markup.
Styling is presentation attributes only, so a chart looks the same inline and standalone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Optional

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_FIRST_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")  # matplotlib's tab10
PALETTE = (*_FIRST_COLORS, "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#d62728")
NONFINITE_COLOR = "#d62728"
MARKER_COLOR = "#d62728"
MISSING_COLOR = "#e3e3e3"
# viridis, sampled: cold (small norms) to warm (large norms)
SCALE = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
LOG_Y_DECADES = 3.0
MAX_MARKERS = 300


@dataclass(frozen=True)
class Span:
    """Consecutive non-finite points of one kind ("NaN", "+Inf" or "-Inf")."""

    kind: str
    first: int
    last: int
    count: int


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


def _num(value: float) -> str:
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
    return "M" + "L".join(f"{_num(x)} {_num(y)}" for x, y in points)


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
        f'<rect x="{_num(frame.left)}" y="{_num(frame.top)}" '
        f'width="{_num(frame.right - frame.left)}" height="{_num(frame.bottom - frame.top)}" '
        'fill="#fcfcfd" stroke="#d0d4da"/>'
    ]
    y_ticks = _log_ticks(frame.y0, frame.y1) if frame.log_y else nice_ticks(frame.y0, frame.y1)
    for tick in y_ticks:
        y = frame.bottom - (tick - frame.y0) / ((frame.y1 - frame.y0) or 1.0) * (
            frame.bottom - frame.top
        )
        text = f"1e{tick:.0f}" if frame.log_y else fmt_value(tick)
        out.append(
            f'<line x1="{_num(frame.left)}" x2="{_num(frame.right)}" y1="{_num(y)}" '
            f'y2="{_num(y)}" stroke="#eceef1"/><text x="{_num(frame.left - 6)}" '
            f'y="{_num(y + 4)}" text-anchor="end">{escape(text)}</text>'
        )
    for tick in nice_ticks(frame.x0, frame.x1, 6):
        x = frame.x(tick)
        out.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(frame.top)}" '
            f'y2="{_num(frame.bottom)}" stroke="#eceef1"/><text x="{_num(x)}" '
            f'y="{_num(frame.bottom + 15)}" text-anchor="middle">{fmt_step(tick)}</text>'
        )
    out.append(
        f'<text x="{_num(frame.right)}" y="{_num(frame.bottom + 30)}" text-anchor="end" '
        'fill="#6b7280">step</text>'
    )
    if y_label:
        out.append(
            f'<text x="{_num(frame.left)}" y="{_num(frame.top - 6)}" fill="#6b7280">'
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
            f'<rect x="{_num(x0 - 2)}" y="{_num(y)}" width="{_num(max(x1 - x0, 0) + 4)}" '
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
        x = _num(frame.x(step))
        labels = list(dict.fromkeys(m.label for m in group))
        tip = "\n".join(labels[:10]) + (
            f"\n... and {len(labels) - 10} more" if len(labels) > 10 else ""
        )
        strong = any(m.strong for m in group)
        look = 'stroke-width="1.3" opacity="0.85"' if strong else 'stroke-width="1" opacity="0.35"'
        out.append(
            f'<g class="anomaly-marker" data-step="{step}"><title>{escape(tip)}</title>'
            f'<line x1="{x}" x2="{x}" y1="{_num(frame.top)}" y2="{_num(frame.bottom)}" '
            f'stroke="{color}" stroke-dasharray="4 3" {look}/>'
            f'<line x1="{x}" x2="{x}" y1="{_num(frame.top)}" y2="{_num(frame.bottom)}" '
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
            f'<g class="legend-item"><line x1="{_num(x)}" x2="{_num(x + 16)}" y1="28" y2="28" '
            f'stroke="{line.color}" stroke-width="2.5"{dash}/><text x="{_num(x + 21)}" '
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
                f'<circle cx="{_num(x)}" cy="{_num(frame.y(value))}" r="2" fill="{line.color}"/>'
            )
        out.extend(_spans(frame, line))
    out.extend(_markers(frame, markers))
    if not any(line.steps or line.spans for line in lines):
        out.append(
            f'<text x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle">'
            "no data</text>"
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
    from tracer.report.data import downsample

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


def _color(fraction: float) -> str:
    fraction = min(max(fraction, 0.0), 1.0) * (len(SCALE) - 1)
    index = min(int(fraction), len(SCALE) - 2)
    part = fraction - index
    low, high = SCALE[index], SCALE[index + 1]
    r, g, b = (round(a + (z - a) * part) for a, z in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    title: str,
    rows: Sequence[str],
    columns: Sequence[int],
    cells: Sequence[Sequence[Optional[float]]],
    *,
    width: int = 1200,
    tooltips: bool = True,
) -> str:
    """Rows = layers, columns = checkpoint steps, colour = log10 of the value.

    None (the layer has no statistics at that checkpoint) is grey, NaN and +-Inf are red, a
    zero gets the coldest colour (log10 of it does not exist; its tooltip says 0).
    """
    logs = [math.log10(v) for row in cells for v in row if v is not None and 0 < v < math.inf]
    low, high = (min(logs), max(logs)) if logs else (0.0, 1.0)
    span = (high - low) or 1.0
    label_width = 250
    row_height = 14 if len(rows) <= 50 else max(3, min(10, 900 // len(rows)))
    top, left = 58, label_width + 10
    cell_width = (width - left - 20) / max(len(columns), 1)
    height = top + row_height * len(rows) + 44
    out = [
        f'<svg class="heatmap" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="{FONT}" font-size="11" fill="#374151" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="12" y="16" font-size="13" font-weight="600" fill="#111827">'
        f"{escape(title)}</text>",
    ]
    legend_x = left
    for i in range(10):
        out.append(
            f'<rect x="{legend_x + i * 16}" y="26" width="16" height="10" fill="{_color(i / 9)}"/>'
        )
    out.append(
        f'<text x="{legend_x - 6}" y="35" text-anchor="end">{fmt_value(10**low)}</text>'
        f'<text x="{legend_x + 166}" y="35">{fmt_value(10**high)} (log scale)</text>'
        f'<rect x="{legend_x + 290}" y="26" width="10" height="10" fill="{MISSING_COLOR}"/>'
        f'<text x="{legend_x + 304}" y="35">no data</text>'
        f'<rect x="{legend_x + 360}" y="26" width="10" height="10" fill="{NONFINITE_COLOR}"/>'
        f'<text x="{legend_x + 374}" y="35">NaN / Inf</text>'
    )
    for r, (layer, values) in enumerate(zip(rows, cells, strict=True)):
        y = top + r * row_height
        short = layer if len(layer) <= 40 else "…" + layer[-39:]
        out.append(f'<g class="hm-row" data-layer="{escape(layer)}"><title>{escape(layer)}</title>')
        if row_height >= 7:
            out.append(
                f'<text x="{label_width}" y="{_num(y + row_height - 2)}" '
                f'font-size="{min(11, row_height)}" '
                f'text-anchor="end">{escape(short)}</text>'
            )
        for c, value in enumerate(values):
            if value is None:
                fill, text = MISSING_COLOR, "no data"
            elif not math.isfinite(value):
                fill, text = NONFINITE_COLOR, fmt_value(value)
            else:
                fill = _color((math.log10(value) - low) / span) if value > 0 else _color(0)
                text = fmt_value(value)
            tip = f"<title>{escape(layer)} @ step {columns[c]}: {text}</title>" if tooltips else ""
            out.append(
                f'<rect x="{_num(left + c * cell_width)}" y="{y}" '
                f'width="{_num(cell_width + 0.3)}" height="{row_height}" fill="{fill}">'
                f"{tip}</rect>"
            )
        out.append("</g>")
    bottom = top + row_height * len(rows)
    shown = set(range(0, len(columns), max(1, math.ceil(len(columns) / 10))))
    if len(columns) - 1 - max(shown, default=-99) >= max(1, len(columns) / 20):
        shown.add(len(columns) - 1)
    for c in sorted(i for i in shown if i >= 0):
        x = left + (c + 0.5) * cell_width
        out.append(
            f'<text x="{_num(x)}" y="{bottom + 15}" text-anchor="middle">'
            f"{fmt_step(columns[c])}</text>"
        )
    out.append(
        f'<text x="{width - 20}" y="{bottom + 32}" text-anchor="end" fill="#6b7280">'
        "checkpoint step</text></svg>"
    )
    return "".join(out)
