"""The `tracer` command: questions about stored runs, from a terminal or a script.

    tracer runs [--project P] [--status S] [--tag T]     tracer show RUN
    tracer compare RUN1 RUN2 [--metric M]                tracer anomalies RUN [--detect]
    tracer export RUN... --format csv|json|parquet|arrow [-o FILE]
    tracer gc [--days N] [--pins] [--dry-run]
    tracer plot RUN METRIC... [-o file.svg|png]          tracer report RUN [RUN2] -o r.html
    tracer ui [--host H] [--port N] [--token T] [--open] (the live dashboard)
    tracer copy SRC DST [RUN...]                         (between stores, e.g. to PostgreSQL)

Every command takes `--storage` (or TRACER_STORAGE_PATH); listings take `--json`. Exit codes
are in `tracer.cli.common`. Kept out of `import tracer`: click and rich load only here.
"""

from __future__ import annotations

import logging

import click

from tracer.cli.anomalies import anomalies_command
from tracer.cli.files import export_command, gc_command
from tracer.cli.plots import plot_command, report_command
from tracer.cli.runs import compare_command, runs_command, show_command
from tracer.cli.transfer import copy_command
from tracer.cli.ui import ui_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tracer-core", prog_name="tracer")
@click.option("-v", "--verbose", is_flag=True, help="Show Tracer's log messages.")
def cli(verbose: bool) -> None:
    """Tracer: look at training runs recorded in a local SQLite file."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


for _command in (
    runs_command,
    show_command,
    compare_command,
    anomalies_command,
    export_command,
    gc_command,
    plot_command,
    report_command,
    ui_command,
    copy_command,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="tracer")
