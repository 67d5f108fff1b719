"""`tracer export` (runs' data as CSV or JSON here; Parquet or Arrow in `export_tables.py`)
and `tracer gc` (retention, by hand, pinned checkpoints included)."""

from __future__ import annotations

import csv
import json
import sys
import time
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Optional

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
from tracer.records import RunRecord

if TYPE_CHECKING:
    from tracer.analysis import QueryEngine


@click.command("export")
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet", "arrow"]),
    default="csv",
    show_default=True,
    help="csv: one row per step, one column per metric (empty where a metric has no value;"
    " a leading run_id column for several runs); json: the run, every metric's steps and"
    ' values, anomalies, events and checkpoints (several runs: {"runs": [...]});'
    " parquet, arrow (Arrow IPC file): one row per point (run_id, step, metric, value, time,"
    " rank) with the runs (config included) and their anomalies as JSON in the file's"
    " metadata; these two need -o and tracer-core[frames].",
)
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout."
)
@storage_option
@fails_cleanly
def export_command(
    runs: tuple[str, ...], fmt: str, metrics: tuple[str, ...], output: Optional[str], storage: str
) -> None:
    """Export the metrics of RUN... (and everything else stored with them)."""
    if fmt in ("parquet", "arrow") and output is None:
        raise click.UsageError(f"--format {fmt} writes a binary file: give it with -o FILE")
    with open_query(storage) as query:
        records = list({r["run_id"]: r for r in map(query.resolve_run, runs)}.values())
        if fmt in ("parquet", "arrow"):
            from tracer.cli.export_tables import write_table_file

            assert output is not None
            points = write_table_file(query, records, metrics, fmt, output)
            errors.print(f"wrote {points} point(s) of {len(records)} run(s) to {output}")
            return
        exports = [_gather(query, record, metrics, fmt) for record in records]
    several = len(exports) > 1
    if output is None:
        _write(sys.stdout, fmt, exports, several)
        return
    with open(output, "w", newline="", encoding="utf-8") as handle:
        _write(handle, fmt, exports, several)
    names = ", ".join(export.run_id for export in exports)
    count = sum(len(export.histories) for export in exports)
    errors.print(f"wrote {count} metric(s) of run {names} to {output}")


class _Export(NamedTuple):
    run_id: str
    histories: dict[str, tuple[Any, Any]]
    document: dict[str, Any]


def _gather(query: QueryEngine, record: RunRecord, metrics: tuple[str, ...], fmt: str) -> _Export:
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
    return _Export(run_id, histories, document)


def _write(handle: IO[str], fmt: str, exports: list[_Export], several: bool) -> None:
    if fmt == "json":
        document: Any = {"runs": [e.document for e in exports]} if several else exports[0].document
        json.dump(jsonable(document), handle, indent=1, allow_nan=False)
        handle.write("\n")
        return
    writer = csv.writer(handle)
    columns = list(dict.fromkeys(name for export in exports for name in export.histories))
    writer.writerow(["run_id", "step", *columns] if several else ["step", *columns])
    for export in exports:
        for step, row in _rows(export.histories):
            cells = [step, *(repr(row[c]) if c in row else "" for c in columns)]
            writer.writerow([export.run_id, *cells] if several else cells)


def _rows(histories: dict[str, tuple[Any, Any]]) -> list[tuple[int, dict[str, float]]]:
    """Wide CSV rows: per step, the metrics' values there; values are written with repr
    (exact floats, `nan` / `inf` as Python and pandas read them)."""
    by_step: dict[int, dict[str, float]] = {}
    for name, (steps, values) in histories.items():
        for step, value in zip(steps, values, strict=True):
            by_step.setdefault(step, {})[name] = value
    return sorted(by_step.items())


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
