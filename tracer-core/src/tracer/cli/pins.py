"""Pinned checkpoints in the CLI: which ones `tracer runs` and `tracer show` list, and which
ones `tracer gc` removes (never silently: each is listed, `--dry-run` only lists).

Pins are files under the store's directory (`tracer.actions.pins`), read from disk here:
a listing of folders, not a read of any run's history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Optional

from rich.table import Table

from tracer.actions.pins import Pin, list_pins, remove_run_pins, runs_with_pin_folders
from tracer.cli.common import console, plain


class PinRemoval(NamedTuple):
    """A run's pin folder that gc removes, its pins, and why."""

    run_id: str
    pins: list[Pin]
    reason: str


def pins_by_run(query: Any) -> dict[str, list[Pin]]:
    """Every pin under the store's directory, by run id ({} for a store that is not local)."""
    directory = query.storage.local_directory()
    found: dict[str, list[Pin]] = {}
    if directory is None:
        return found
    for pin in list_pins(directory):
        found.setdefault(pin.run_id, []).append(pin)
    return found


def pin_removals(
    query: Any,
    deleted_runs: Iterable[str],
    projects: Optional[list[str]],
    *,
    every_pin: bool,
) -> list[PinRemoval]:
    """What gc removes: the pins of the runs it deletes, the pin folders of runs no longer in
    the store (and staging areas a killed run left), and with `every_pin` the pins of the
    ended runs of `projects` (every project when None) that it keeps. A running run's pins are
    never removed."""
    directory = query.storage.local_directory()
    if directory is None:
        return []
    deleted = set(deleted_runs)
    runs = {run["run_id"]: run for run in query.list_runs()}
    removals = []
    for run_id in runs_with_pin_folders(directory):
        pins = list_pins(directory, run_id)
        run = runs.get(run_id)
        if run_id in deleted:
            removals.append(PinRemoval(run_id, pins, "run deleted"))
        elif run is None:
            removals.append(PinRemoval(run_id, pins, "run no longer stored"))
        elif run["status"] == "running":
            continue
        elif every_pin and (projects is None or run["project_name"] in projects):
            removals.append(PinRemoval(run_id, pins, "--pins"))
        elif not pins:  # only a staging area, left by a run that did not finish
            removals.append(PinRemoval(run_id, pins, "staging of an ended run"))
    return removals


def remove_pins(query: Any, removals: list[PinRemoval]) -> None:
    directory = query.storage.local_directory()
    for removal in removals:
        remove_run_pins(directory, removal.run_id)


def print_pin_removals(removals: list[PinRemoval], dry_run: bool) -> None:
    """One row per pinned checkpoint removed (or that would be)."""
    listed = [(r, pin) for r in removals for pin in r.pins]
    staging = sum(1 for r in removals if not r.pins)
    verb = "would remove" if dry_run else "removed"
    if listed:
        table = Table(title=f"{verb} {len(listed)} pinned checkpoint(s)", title_justify="left")
        for column in ("run", "pinned checkpoint", "why"):
            table.add_column(column)
        for removal, pin in listed:
            table.add_row(removal.run_id, plain(pin.path), removal.reason)
        console.print(table)
    if staging:
        console.print(f"{verb} the staging area of {staging} ended run(s) (no pins in it)")


def print_pins(pins: list[Pin]) -> None:
    for pin in pins:
        state = " [yellow](copy not complete)[/]" if pin.partial else ""
        console.print(f"pinned: {plain(pin.path)}{state}")
