"""`tracer plot` (curves in the terminal, or an SVG/PNG file) and `tracer report` (HTML)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import click

from tracer.cli.common import (
    MissingExtra,
    console,
    errors,
    fails_cleanly,
    open_query,
    storage_option,
)
from tracer.cli.terminal_plot import reduce_for_chart, render

Series = tuple[str, Sequence[int], Sequence[float]]


@click.command("plot")
@click.argument("run")
@click.argument("metrics", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write an image instead: .svg (built in) or .png (needs matplotlib:"
    " pip install 'tracer-core[plot]').",
)
@click.option("--log", "log_y", is_flag=True, help="Logarithmic y axis.")
@click.option("--width", type=click.IntRange(min=30), help="Terminal chart width (characters).")
@click.option("--height", type=click.IntRange(min=5), default=16, show_default=True)
@storage_option
@fails_cleanly
def plot_command(
    run: str,
    metrics: tuple[str, ...],
    output: Optional[str],
    log_y: bool,
    width: Optional[int],
    height: int,
    storage: str,
) -> None:
    """Plot METRICS of RUN against the step, anomalies marked at their steps."""
    with open_query(storage) as query:
        record = query.resolve_run(run)
        run_id = record["run_id"]
        known = {m["name"] for m in query.storage.list_metrics(run_id)}
        missing = [m for m in metrics if m not in known]
        if missing:
            shown = ", ".join(sorted(n for n in known if not n.startswith("_"))[:20])
            raise click.BadParameter(
                f"run {run_id} has no metric {', '.join(missing)}; it has: {shown}",
                param_hint="METRICS",
            )
        series: list[Series] = []
        for name in metrics:
            steps, values = query.storage.get_metric_arrays(run_id, name)
            series.append((name, steps, values))
        anomalies = query.storage.get_anomalies(run_id)
    serious = [a for a in anomalies if a["severity"] != "info"]  # plateaus would crowd it
    related = [a for a in serious if a["subject"] in metrics or not a["subject"]]
    marks = sorted({a["step"] for a in (related or serious)})
    title = f"{record['run_name']} ({run_id})"
    if output is None:
        chart_width = width or console.width
        reduced = [reduce_for_chart(steps, values, chart_width) for _, steps, values in series]
        drawn = [(name, r[0], r[1]) for (name, _, _), r in zip(series, reduced, strict=True)]
        console.print(title, style="bold", markup=False)
        console.print(
            render(drawn, marks, chart_width, height, log_y, totals=[r[2] for r in reduced])
        )
        return
    extension = os.path.splitext(output)[1].lower()
    if extension == ".svg":
        from tracer.report.svg import standalone_line_chart

        messages = [(a["step"], a["message"]) for a in (related or serious)]
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(standalone_line_chart(title, series, messages))
    elif extension == ".png":
        _write_png(output, title, series, marks, log_y)
    else:
        raise click.BadParameter("the image must be a .svg or .png file", param_hint="-o")
    errors.print(f"wrote {output}")


def _write_png(
    output: str, title: str, series: list[Series], marks: list[int], log_y: bool
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MissingExtra(
            "PNG output needs matplotlib: pip install 'tracer-core[plot]' (or write .svg)"
        ) from None
    figure, axes = pyplot.subplots(figsize=(10, 4), dpi=120)
    for name, steps, values in series:
        axes.plot(list(steps), list(values), label=name, linewidth=1.2)
    for step in marks:
        axes.axvline(step, color="red", alpha=0.35, linewidth=1)
    if log_y:
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output)
    pyplot.close(figure)


@click.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="report.html",
    show_default=True,
    help="The HTML file to write.",
)
@storage_option
@fails_cleanly
def report_command(runs: tuple[str, ...], output: str, storage: str) -> None:
    """One self-contained HTML report of RUN, or of two runs overlaid (opens offline)."""
    if len(runs) > 2:
        raise click.UsageError("give one run, or two to overlay")
    from tracer.report import write_report

    with open_query(storage):  # the same check as other commands: the storage exists
        pass
    path = write_report(list(runs), output, storage_path=storage)
    errors.print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
