"""`tracer runs`, `tracer show` and `tracer compare`: which runs there are and how they went."""

from __future__ import annotations

import math
from typing import Any, Optional

import click
from rich.table import Table

from tracer.cli.common import (
    console,
    duration,
    fails_cleanly,
    json_option,
    number,
    open_query,
    plain,
    print_json,
    severity_text,
    status_text,
    storage_option,
    timestamp,
)
from tracer.cli.pins import pins_by_run, print_pins
from tracer.config import mask_password

TRACER_PREFIXES = ("grad/", "system/", "optimizer/", "rank/")


def is_user_metric(name: str) -> bool:
    return not name.startswith(TRACER_PREFIXES) and not name.startswith("_")


@click.command("runs")
@click.option("--project", help="Only this project's runs.")
@click.option(
    "--status",
    type=click.Choice(["running", "finished", "failed", "killed", "crashed"]),
    help="Only runs with this status (crashed: a running run whose process is gone).",
)
@click.option("--tag", help="Only runs with this tag.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, newest first.")
@storage_option
@json_option
@fails_cleanly
def runs_command(
    project: Optional[str],
    status: Optional[str],
    tag: Optional[str],
    limit: Optional[int],
    storage: str,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    with open_query(storage) as query:
        runs = query.list_runs(project, status=status, tag=tag)
        runs.sort(key=lambda r: r["start_time"], reverse=True)
        runs = runs[:limit] if limit else runs
        counts = {r["run_id"]: len(query.storage.get_anomalies(r["run_id"])) for r in runs}
        pinned = pins_by_run(query)
    if as_json:
        print_json(
            [
                {
                    **run,
                    "anomalies": counts[run["run_id"]],
                    "pinned": [pin.path for pin in pinned.get(run["run_id"], [])],
                }
                for run in runs
            ]
        )
        return
    if not runs:
        console.print("No runs.")
        return
    table = Table(
        title=f"{len(runs)} run(s) in {plain(mask_password(storage))}", title_justify="left"
    )
    for column in ("id", "name", "project", "status", "steps", "started", "duration"):
        table.add_column(
            column, justify="right" if column == "steps" else "left", no_wrap=column == "id"
        )
    table.add_column("anomalies", justify="right")
    shows_pins = any(run["run_id"] in pinned for run in runs)
    if shows_pins:
        table.add_column("pinned checkpoints")
    for run in runs:
        pins = [plain(pin.path) for pin in pinned.get(run["run_id"], [])]
        end = run["end_time"] if run["end_time"] is not None else run["heartbeat"]
        table.add_row(
            run["run_id"],
            plain(run["run_name"]),
            plain(run["project_name"]),
            status_text(run["status"]),
            str(run["total_steps"]),
            timestamp(run["start_time"]),
            duration((end or run["start_time"]) - run["start_time"]),
            str(counts[run["run_id"]]) if counts[run["run_id"]] else "-",
            *(["\n".join(pins) or "-"] if shows_pins else []),
        )
    console.print(table)


@click.command("show")
@click.argument("run")
@click.option("--all-metrics", is_flag=True, help="Also Tracer's own grad/, system/ series.")
@storage_option
@json_option
@fails_cleanly
def show_command(run: str, all_metrics: bool, storage: str, as_json: bool) -> None:
    """Summary of RUN (id or name): status, final and best metrics, anomalies."""
    with open_query(storage) as query:
        summary = query.get_run_summary(run)
        anomalies = query.get_anomalies(summary["run_id"])
        healthy = query.last_healthy_checkpoint(summary["run_id"])
        pinned = query.pinned_checkpoints(summary["run_id"])
        on_disk = pins_by_run(query).get(summary["run_id"], [])
    if as_json:
        print_json(
            {
                **summary,
                "anomaly_list": anomalies,
                "last_healthy_save": healthy,
                "pinned_checkpoints": pinned,
            }
        )
        return
    console.print(
        f"[bold]{plain(summary['run_name'])}[/] ({summary['run_id']}) in project"
        f" [bold]{plain(summary['project_name'])}[/]: {status_text(summary['status'])},"
        f" {summary['total_steps']} steps, {duration(summary['duration'])},"
        f" started {timestamp(summary['start_time'])}"
    )
    if summary["error"]:
        console.print(f"[red]error:[/] {plain(summary['error'])}")
    if summary["status"] == "crashed":
        console.print(
            "[magenta]The process stopped without ending the run (killed or crashed);"
            " what it logged before is kept.[/]"
        )
    names = sorted(summary["final_metrics"])
    shown = [n for n in names if all_metrics or is_user_metric(n)]
    if shown:
        table = Table(title="metrics", title_justify="left")
        for column in ("metric", "final", "best"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for name in shown:
            table.add_row(
                plain(name),
                number(summary["final_metrics"][name]),
                number(summary["best_metrics"].get(name)),
            )
        console.print(table)
        hidden = len(names) - len(shown)
        if hidden:
            console.print(f"[dim]{hidden} grad/, system/ and rank/ series: --all-metrics[/]")
    if summary["summary"]:
        values = ", ".join(f"{plain(k)}={number(v)}" for k, v in summary["summary"].items())
        console.print(f"run summary: {values}")
    print_anomaly_table(anomalies, limit=20, hide_info=True)
    if healthy is not None:
        where = plain(healthy.get("path", ""))
        console.print(f"last model save before any anomaly: step {healthy['step']}, {where}")
        if healthy.get("pinned_path"):
            console.print(f"  kept (pinned) at {plain(healthy['pinned_path'])}")
    for pin in pinned:
        reason = f"before {plain(str(pin.get('anomaly_type')))} at step {pin.get('anomaly_step')}"
        gone = "" if pin["exists"] else " [dim](removed)[/]"
        console.print(
            f"pinned the save of step {pin['step']} {reason}: {plain(pin['pinned_path'])}{gone}"
        )
    recorded = {pin["pinned_path"] for pin in pinned}
    print_pins([pin for pin in on_disk if pin.path not in recorded])


def print_anomaly_table(
    anomalies: list[dict[str, Any]], limit: Optional[int] = None, hide_info: bool = False
) -> None:
    """One row per episode: where it started and ended, how many steps it spans, what was
    seen and what to try. Info episodes (a converged plateau, a sudden drop) are left out
    when `hide_info`, with a line saying how many."""
    hidden = [a for a in anomalies if a["severity"] == "info"] if hide_info else []
    if hidden:
        anomalies = [a for a in anomalies if a["severity"] != "info"]
    if not anomalies:
        console.print("No anomalies.")
    else:
        title = f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}"
        table = Table(title=title, title_justify="left")
        for column in ("steps", "count", "type", "severity", "subject", "what was seen / try"):
            table.add_column(column, justify="right" if column in ("steps", "count") else "left")
        for anomaly in anomalies[:limit] if limit else anomalies:
            table.add_row(
                episode_steps(anomaly),
                str(anomaly.get("count", 1)),
                plain(anomaly["anomaly_type"]),
                severity_text(anomaly["severity"]),
                plain(anomaly["subject"] or "-"),
                plain(anomaly["message"])
                + (f"\n[dim]try: {plain(anomaly['hint'])}[/]" if anomaly.get("hint") else ""),
            )
        console.print(table)
        if limit and len(anomalies) > limit:
            console.print(f"[dim]... and {len(anomalies) - limit} more: tracer anomalies RUN[/]")
    if hidden:
        console.print(f"[dim]{len(hidden)} info-level finding(s) not shown: --all[/]")


def episode_steps(anomaly: dict[str, Any]) -> str:
    """ "120", "120-184", or "120-..." while the episode is still open."""
    start, end = anomaly["step"], anomaly.get("end_step", anomaly["step"])
    if anomaly.get("open"):
        return f"{start}-..."
    return str(start) if end == start else f"{start}-{end}"


@click.command("compare")
@click.argument("run1")
@click.argument("run2")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="A metric to compare (repeatable); default: the logged metrics both runs have.",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.05,
    show_default=True,
    help="Relative difference that counts as diverged.",
)
@storage_option
@json_option
@fails_cleanly
def compare_command(
    run1: str, run2: str, metrics: tuple[str, ...], tolerance: float, storage: str, as_json: bool
) -> None:
    """Compare two runs metric by metric: finals, ranges, first step where they diverge."""
    with open_query(storage) as query:
        first, second = query.resolve_run(run1), query.resolve_run(run2)
        if not metrics:
            names_a = {m["name"] for m in query.storage.list_metrics(first["run_id"])}
            names_b = {m["name"] for m in query.storage.list_metrics(second["run_id"])}
            metrics = tuple(sorted(n for n in names_a & names_b if is_user_metric(n)))
        result = query.compare_runs(first["run_id"], second["run_id"], metrics, tolerance)
    if as_json:
        print_json(result)
        return
    table = Table(
        title=f"{plain(first['run_name'])} ({first['run_id']}) vs"
        f" {plain(second['run_name'])} ({second['run_id']})",
        title_justify="left",
    )
    for column in ("metric", "final 1", "final 2", "delta", "min 1", "min 2", "diverged at"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in result["metrics"].items():
        delta = row["delta"]
        style = "" if not math.isfinite(delta) or delta == 0 else ("green" if delta < 0 else "red")
        diverged = row["first_divergence_step"]
        table.add_row(
            plain(name),
            number(row["run1"]["final"]),
            number(row["run2"]["final"]),
            f"[{style}]{number(delta)}[/]" if style else number(delta),
            number(row["run1"]["min"]),
            number(row["run2"]["min"]),
            "-" if diverged is None else str(diverged),
        )
    if not result["metrics"]:
        console.print("The runs have no logged metric in common; pass --metric.")
        return
    console.print(table)
