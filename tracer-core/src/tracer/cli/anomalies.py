"""`tracer anomalies`: what went wrong in a run, as stored or detected again now."""

from __future__ import annotations

from typing import Optional

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tracer.cli.common import (
    EXIT_ANOMALIES,
    console,
    errors,
    fails_cleanly,
    json_option,
    open_query,
    plain,
    print_json,
    storage_option,
)
from tracer.cli.runs import print_anomaly_table

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@click.command("anomalies")
@click.argument("run")
@click.option(
    "--detect",
    is_flag=True,
    help="Run the detectors over the stored run now (its stored settings), with a progress"
    " bar; otherwise list the anomalies found while it trained.",
)
@click.option("--store", is_flag=True, help="With --detect: store the new anomalies too.")
@click.option(
    "--type", "types", multiple=True, help="Only this anomaly type (repeatable), e.g. nan_or_inf."
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Show info-level findings too (a converged plateau, a sudden drop).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["info", "warning", "critical"]),
    help=f"Exit with status {EXIT_ANOMALIES} when an anomaly of this severity or worse is found.",
)
@storage_option
@json_option
@fails_cleanly
def anomalies_command(
    run: str,
    detect: bool,
    store: bool,
    types: tuple[str, ...],
    show_all: bool,
    fail_on: Optional[str],
    storage: str,
    as_json: bool,
) -> None:
    """Anomaly episodes of RUN (id or name), in step order; info-level ones with --all."""
    if store and not detect:
        raise click.UsageError("--store needs --detect")
    with open_query(storage) as query:
        record = query.resolve_run(run)
        if detect:
            from tracer.analysis import AnomalyDetector

            detector = AnomalyDetector(query.storage)
            with Progress(
                TextColumn("detecting"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} series"),
                TimeElapsedColumn(),
                console=errors,
                transient=True,
                disable=as_json,
            ) as bar:
                task = bar.add_task("detect", total=None)

                def advance(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                found = detector.detect(record["run_id"], types or None, progress=advance)
            if store:
                new = detector.store_anomalies(found)
                errors.print(f"stored {new} new anomal{'y' if new == 1 else 'ies'}")
        else:
            found = query.get_anomalies(record["run_id"], types or None)
    shown = found if show_all else [a for a in found if a["severity"] != "info"]
    if as_json:
        print_json(shown)
    else:
        console.print(
            f"[bold]{plain(record['run_name'])}[/] ({record['run_id']}):"
            f" {'detected now' if detect else 'found while training'}"
        )
        print_anomaly_table(found, hide_info=not show_all)
    if fail_on is not None:
        worst = max((SEVERITY_RANK.get(a["severity"], 0) for a in found), default=-1)
        if worst >= SEVERITY_RANK[fail_on]:
            raise SystemExit(EXIT_ANOMALIES)
