"""The per-layer gradient-norm heatmap of the report: rows = layers, columns = checkpoints.

Colour is log10 of the norm on a sampled viridis scale, so layers whose norms differ by
orders of magnitude stay readable side by side; no statistics is grey, NaN/Inf is red.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Optional

from tracer.report.svg import FONT, NONFINITE_COLOR, fmt_step, fmt_value, num

MISSING_COLOR = "#e3e3e3"
# viridis, sampled: cold (small norms) to warm (large norms)
SCALE = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


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
                f'<text x="{label_width}" y="{num(y + row_height - 2)}" '
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
                f'<rect x="{num(left + c * cell_width)}" y="{y}" '
                f'width="{num(cell_width + 0.3)}" height="{row_height}" fill="{fill}">'
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
            f'<text x="{num(x)}" y="{bottom + 15}" text-anchor="middle">'
            f"{fmt_step(columns[c])}</text>"
        )
    out.append(
        f'<text x="{width - 20}" y="{bottom + 32}" text-anchor="end" fill="#6b7280">'
        "checkpoint step</text></svg>"
    )
    return "".join(out)
