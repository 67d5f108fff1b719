"""`tracer copy SRC DST [RUN...]`: copy runs between two stores (SQLite and PostgreSQL, either
way; `tracer.storage.transfer`)."""

from __future__ import annotations

import os

import click
from rich.table import Table

from tracer.cli.common import console, fails_cleanly, plain
from tracer.config import mask_password
from tracer.exceptions import TracerError


@click.command("copy")
@click.argument("source")
@click.argument("target")
@click.argument("runs", nargs=-1)
@click.option("--project", help="Only the runs of this project (with no RUN given).")
@fails_cleanly
def copy_command(source: str, target: str, runs: tuple[str, ...], project: str | None) -> None:
    """Copy runs (ids or names; default: all) from the store SOURCE to the store TARGET, each
    a directory or a backend URL (postgresql://...). Run again, it copies only what changed."""
    from tracer.analysis import QueryEngine
    from tracer.storage import open_storage
    from tracer.storage.transfer import copy_runs

    if "://" not in source and not os.path.exists(source):
        raise TracerError(f"no Tracer data at {source!r}")
    with QueryEngine(source) as query:
        if runs:
            chosen = [query.resolve_run(run) for run in runs]
        else:
            chosen = list(reversed(query.list_runs(project)))
        destination = open_storage(target)
        try:
            copied = copy_runs(query.storage, destination, chosen)
        finally:
            destination.close()
    table = Table(
        title=f"{len(copied)} run(s) from {plain(mask_password(source))}"
        f" to {plain(mask_password(target))}",
        title_justify="left",
    )
    for column in ("id", "name", "outcome", "points"):
        table.add_column(column)
    for done in copied:
        table.add_row(done.run_id, plain(done.run_name), done.outcome, str(done.points))
    console.print(table)
