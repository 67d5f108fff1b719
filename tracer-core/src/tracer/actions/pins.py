"""Where pinned checkpoints live, and how they are listed and removed.

`<storage>/pinned/<run id>/<name>`: one folder per run, in the run's local storage directory,
beside `tracer.db`; `<name>` is the saved checkpoint's own file or folder name (a step is
added when two pins of a run share it; never a name starting with "."). `.staging/` in a
run's folder holds the hard links of recent saves while the run trains (see
`tracer.actions.pinning`); a pin copied across filesystems is written as `<name>.partial` and
renamed when complete, so a listed pin is whole unless marked `partial`. Readers (the CLI's
`runs`, `show` and `gc`) use this module; nothing here knows the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from tracer.actions.trees import remove_tree

PINNED_DIRECTORY = "pinned"
STAGING_DIRECTORY = ".staging"
PARTIAL_SUFFIX = ".partial"
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Pin:
    """A pinned checkpoint on disk (`partial`: a copy still being written, or cut short)."""

    run_id: str
    name: str
    path: str
    partial: bool = False


def run_directory(storage_directory: str, run_id: str) -> str:
    """The folder of a run's pins (a run id that is not a plain name is %-quoted)."""
    folder = run_id if _PLAIN_ID.match(run_id) else urllib.parse.quote(run_id, safe="")
    return os.path.join(storage_directory, PINNED_DIRECTORY, folder)


def pin_name(directory: str, saved_path: str, step: int) -> str:
    """The name a save of `step` gets in a run's pin folder: its own base name, or with the
    step added when that name is taken."""
    base = os.path.basename(os.path.normpath(saved_path)) or "checkpoint"
    if base.startswith("."):
        base = "checkpoint" + base
    for name in (base, f"{base}.step{step}"):
        if not os.path.lexists(os.path.join(directory, name)):
            return name
    number = 2
    while os.path.lexists(os.path.join(directory, f"{base}.step{step}.{number}")):
        number += 1
    return f"{base}.step{step}.{number}"


def list_pins(storage_directory: str, run_id: Optional[str] = None) -> list[Pin]:
    """The pins under a storage directory (of one run when `run_id` is given), by run then
    name; staging folders are not pins."""
    root = os.path.join(storage_directory, PINNED_DIRECTORY)
    if run_id is not None:
        folders = [os.path.basename(run_directory(storage_directory, run_id))]
    else:
        try:
            folders = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
    pins = []
    for folder in folders:
        directory = os.path.join(root, folder)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        owner = urllib.parse.unquote(folder)
        for name in names:
            if name.startswith("."):  # the staging area (and one a crashed run left)
                continue
            partial = name.endswith(PARTIAL_SUFFIX)
            pins.append(Pin(owner, name, os.path.join(directory, name), partial))
    return pins


def runs_with_pin_folders(storage_directory: str) -> list[str]:
    """Run ids that have a pin folder (pins, or a staging area a crashed run left)."""
    try:
        folders = sorted(os.listdir(os.path.join(storage_directory, PINNED_DIRECTORY)))
    except FileNotFoundError:
        return []
    return [urllib.parse.unquote(folder) for folder in folders]


def remove_run_pins(storage_directory: str, run_id: str) -> list[Pin]:
    """Remove a run's pin folder (its pins and staging area); returns the pins removed."""
    pins = list_pins(storage_directory, run_id)
    directory = run_directory(storage_directory, run_id)
    if os.path.lexists(directory):
        remove_tree(directory)
    return pins


def remove_pin(pin: Pin) -> None:
    """Remove one pin, and its run's folder once nothing else is in it."""
    remove_tree(pin.path)
    folder = os.path.dirname(pin.path)
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only when empty
