"""Line charts drawn in the terminal with Braille dots (2 x 4 dots per character cell).

Each series is first reduced by the reduction the report and the dashboard share
(`reduce_for_chart`), then to the columns of the chart: every dot column shows the min-max
range of the values falling into it, joined to the previous column, so a spike in a million
steps still shows. Non-finite values are not drawn as lines; their columns get a red `!` on the top
row, and anomaly steps a red `v` there, so both stay visible at any zoom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

from tracer.analysis.downsample import reduce_points

COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][column] in a cell
LABEL_WIDTH = 11


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.5g}"


class BrailleCanvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.owner = [[-1] * width for _ in range(height)]

    def dot(self, x: int, y: int, series: int) -> None:
        """Dot at pixel (x, y), y = 0 at the bottom."""
        if not (0 <= x < self.width * 2 and 0 <= y < self.height * 4):
            return
        row = self.height - 1 - y // 4
        cell_y = 3 - y % 4
        self.bits[row][x // 2] |= _DOTS[cell_y][x % 2]
        self.owner[row][x // 2] = series

    def vertical(self, x: int, y0: int, y1: int, series: int) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.dot(x, y, series)


def chart_columns(width: int) -> int:
    """Character columns of the plotting area of a chart `width` characters wide."""
    return max(10, width - LABEL_WIDTH - 1)


def reduce_for_chart(
    steps: Sequence[int], values: Sequence[float], width: int
) -> tuple[list[int], list[float], tuple[int, int]]:
    """A history reduced for a chart `width` characters wide by the shared reduction
    (`tracer.analysis.downsample`: one min/max pair per dot column, every NaN/Inf kept),
    with (points, non-finite points) of the whole history for the legend."""
    reduced = reduce_points(steps, values, 4 * chart_columns(width))
    bad = len(reduced.nonfinite)
    return reduced.steps, reduced.values, (reduced.count, bad)


def render(
    series: Sequence[tuple[str, Sequence[int], Sequence[float]]],
    markers: Sequence[int] = (),
    width: int = 80,
    height: int = 16,
    log_y: bool = False,
    totals: Sequence[tuple[int, int]] = (),
) -> Text:
    """A chart of `series` (name, steps, values) with anomaly `markers` (steps); `totals`
    are (points, non-finite points) per series when the series are reduced already."""
    columns = chart_columns(width)
    steps_all = [s for _, steps, _ in series for s in steps]
    if not steps_all:
        return Text("(no data)")
    first, last = min(steps_all), max(steps_all)
    span = max(last - first, 1)

    def usable(value: float) -> bool:
        return math.isfinite(value) and (value > 0 or not log_y)

    finite = [v for _, _, values in series for v in values if usable(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    transform = math.log10 if log_y else (lambda v: v)
    t_low, t_high = transform(low), transform(high)
    if t_high == t_low:
        t_low, t_high = t_low - 0.5, t_high + 0.5
    canvas = BrailleCanvas(columns, height)
    pixels_x, pixels_y = columns * 2, height * 4
    nonfinite: set[int] = set()  # character columns holding a NaN/Inf value
    marked: set[int] = set()  # character columns of anomaly steps

    def x_of(step: int) -> int:
        return min(pixels_x - 1, int((step - first) / span * (pixels_x - 1) + 0.5))

    for index, (_, steps, values) in enumerate(series):
        ranges: dict[int, tuple[float, float]] = {}
        for step, value in zip(steps, values, strict=True):
            x = x_of(step)
            if not math.isfinite(value):
                nonfinite.add(x // 2)
                continue
            if not usable(value):
                continue
            y = (transform(value) - t_low) / (t_high - t_low) * (pixels_y - 1)
            lo, hi = ranges.get(x, (y, y))
            ranges[x] = (min(lo, y), max(hi, y))
        previous = None
        for x in sorted(ranges):
            lo, hi = (round(v) for v in ranges[x])
            if previous is not None and x - previous[0] <= 2:
                canvas.vertical(x, previous[1], lo if lo > previous[1] else hi, index)
            canvas.vertical(x, lo, hi, index)
            previous = (x, (lo + hi) // 2)
    for step in markers:
        if first <= step <= last:
            marked.add(x_of(step) // 2)
    text = Text()
    top_label, bottom_label = (10**t_high, 10**t_low) if log_y else (t_high, t_low)
    for row in range(height):
        label = _fmt(top_label) if row == 0 else (_fmt(bottom_label) if row == height - 1 else "")
        text.append(f"{label:>{LABEL_WIDTH}}│", style="dim")
        for column in range(columns):
            if row == 0 and (column in nonfinite or column in marked):
                text.append("!" if column in nonfinite else "v", style="bold red")
                continue
            bits = canvas.bits[row][column]
            owner = canvas.owner[row][column]
            text.append(chr(0x2800 + bits), style=COLORS[owner % len(COLORS)] if bits else "")
        text.append("\n")
    axis = f"{first}".ljust(columns - len(str(last))) + f"{last}"
    text.append(" " * LABEL_WIDTH + "└" + "─" * columns + "\n", style="dim")
    text.append(" " * (LABEL_WIDTH + 1) + axis + "  step\n", style="dim")
    for index, (name, _, values) in enumerate(series):
        if index < len(totals):
            points, bad = totals[index]
        else:
            points, bad = len(values), sum(1 for v in values if not math.isfinite(v))
        note = f"  ({bad} non-finite, marked !)" if bad else ""
        text.append(f"  ── {name}", style=COLORS[index % len(COLORS)])
        text.append(f"  {points} points{note}\n", style="dim")
    if markers:
        text.append(f"  v anomalies at steps {', '.join(map(str, markers[:10]))}", style="red")
        text.append(" ..." if len(markers) > 10 else "", style="red")
        text.append("\n")
    return text
