"""`tracer export` (a run's data as CSV or JSON) and `tracer gc` (retention, by hand, pinned
checkpoints included)."""

from __future__ import annotations

import csv
import json
import sys
import time
from typing import IO, Any, Optional

import click
from rich.table import Table

from tracer.cli.common import (
    console,
    duration,
    errors,
    fails_cleanly,
    jsonable,
    open_query,
    plain,
    status_text,
    storage_option,
)


@click.command("export")
@click.argument("run")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
    help="csv: one row per step, one column per metric (empty where a metric has no value);"
    " json: the run, every metric's steps and values, anomalies, events and checkpoints.",
)
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout."
)
@storage_option
@fails_cleanly
def export_command(
    run: str, fmt: str, metrics: tuple[str, ...], output: Optional[str], storage: str
) -> None:
    """Export RUN's metrics (and, as JSON, everything else stored with it)."""
    with open_query(storage) as query:
        record = query.resolve_run(run)
        run_id = record["run_id"]
        names = list(metrics) or [
            m["name"] for m in query.storage.list_metrics(run_id) if not m["name"].startswith("_")
        ]
        histories = {name: query.storage.get_metric_arrays(run_id, name) for name in names}
        document: dict[str, Any] = {}
        if fmt == "json":
            document = {
                "run": record,
                "metrics": {
                    name: {"steps": list(steps), "values": list(values)}
                    for name, (steps, values) in histories.items()
                },
                "anomalies": query.get_anomalies(run_id),
                "events": query.storage.get_events(run_id),
                "checkpoints": query.storage.get_checkpoints(run_id),
            }
    if output is None:
        _write(sys.stdout, fmt, document, histories)
        return
    with open(output, "w", newline="", encoding="utf-8") as handle:
        _write(handle, fmt, document, histories)
    errors.print(f"wrote {len(histories)} metric(s) of run {run_id} to {output}")


def _write(
    handle: IO[str], fmt: str, document: dict[str, Any], histories: dict[str, tuple[Any, Any]]
) -> None:
    if fmt == "json":
        json.dump(jsonable(document), handle, indent=1, allow_nan=False)
        handle.write("\n")
    else:
        _write_csv(handle, histories)


def _write_csv(handle: IO[str], histories: dict[str, tuple[Any, Any]]) -> None:
    """Wide CSV: `step` then one column per metric; values written with repr (exact floats,
    `nan` / `inf` as Python and pandas read them)."""
    columns = list(histories)
    by_step: dict[int, dict[str, float]] = {}
    for name, (steps, values) in histories.items():
        for step, value in zip(steps, values, strict=True):
            by_step.setdefault(step, {})[name] = value
    writer = csv.writer(handle)
    writer.writerow(["step", *columns])
    for step in sorted(by_step):
        row = by_step[step]
        writer.writerow([step, *(repr(row[c]) if c in row else "" for c in columns)])


@click.command("gc")
@click.option("--project", help="Only this project (default: every project).")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Delete ended runs (finished, failed, killed, crashed) that ended longer ago than this.",
)
@click.option(
    "--pins",
    "every_pin",
    is_flag=True,
    help="Also remove the pinned checkpoints of the ended runs that are kept (of --project).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@storage_option
@fails_cleanly
def gc_command(
    project: Optional[str], days: int, every_pin: bool, dry_run: bool, storage: str
) -> None:
    """Apply retention now: delete old ended runs, never a running one, with their pinned
    checkpoints; also the pins of runs no longer stored. Each is listed."""
    from tracer.cli.pins import pin_removals, print_pin_removals, remove_pins
    from tracer.storage.retention import expired_runs

    with open_query(storage) as query:
        projects = [project] if project else sorted({r["project_name"] for r in query.list_runs()})
        expired = [run for p in projects for run in expired_runs(query.storage, p, days)]
        removals = pin_removals(
            query,
            [run["run_id"] for run in expired],
            [project] if project else None,
            every_pin=every_pin,
        )
        if not dry_run:
            for run in expired:
                query.storage.delete_run(run["run_id"])
            remove_pins(query, removals)
    if not expired and not removals:
        console.print(f"Nothing to delete: no ended run is older than {days} day(s).")
        return
    now = time.time()
    verb = "would delete" if dry_run else "deleted"
    if expired:
        table = Table(title=f"{verb} {len(expired)} run(s)", title_justify="left")
        for column in ("id", "name", "project", "status", "ended ago"):
            table.add_column(column)
        for run in expired:
            ended = run["end_time"] or run["heartbeat"] or run["start_time"]
            table.add_row(
                run["run_id"],
                plain(run["run_name"]),
                plain(run["project_name"]),
                status_text(run["status"]),
                duration(now - ended),
            )
        console.print(table)
    print_pin_removals(removals, dry_run)
