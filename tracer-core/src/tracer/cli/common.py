"""What every `tracer` command shares: the storage option, errors as exit codes, output.

Exit codes (for scripts): 0 done; 1 the storage could not be read or another Tracer error;
2 a usage error (click's); 3 no such run; 4 `tracer anomalies --fail-on` found anomalies of
that severity or worse; 5 an optional dependency is missing (the message names the extra).

`--json` output is one JSON document on stdout; non-finite numbers are written as the
strings "nan", "inf" and "-inf" (JSON has no such numbers), which `float()` reads back.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from tracer.exceptions import RunNotFoundError, TracerError

EXIT_ERROR, EXIT_NOT_FOUND, EXIT_ANOMALIES, EXIT_MISSING_EXTRA = 1, 3, 4, 5
STATUS_STYLES = {
    "running": "bold cyan",
    "finished": "green",
    "failed": "bold red",
    "killed": "yellow",
    "crashed": "bold magenta",
}
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _console(stderr: bool = False) -> Console:
    """Outside a terminal (a pipe, a file, a test) rich would assume 80 columns and fold the
    tables; there, lines may be as long as COLUMNS says, 160 by default."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else int(os.environ.get("COLUMNS", "160"))
    return Console(stderr=stderr, highlight=False, width=width)


console = _console()
errors = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class MissingExtra(click.ClickException):
    """An optional dependency is not installed; the message says what to install."""

    exit_code = EXIT_MISSING_EXTRA


def fails_cleanly(command: F) -> F:
    """Tracer errors become a one-line message and an exit code, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RunNotFoundError as error:
            errors.print(f"[red]error:[/] {escape(_text(error))}")
            raise SystemExit(EXIT_NOT_FOUND) from None
        except TracerError as error:
            errors.print(f"[red]error:[/] {escape(_text(error))}")
            raise SystemExit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def _text(error: BaseException) -> str:
    return str(error.args[0]) if error.args else str(error)


@contextmanager
def open_query(storage: str) -> Iterator[Any]:
    """A QueryEngine on `storage`; a path that holds no Tracer data is an error, not a new
    empty database created by a read-only command."""
    from tracer.analysis import QueryEngine

    if "://" not in storage and not os.path.exists(storage):
        raise TracerError(
            f"no Tracer data at {storage!r} (pass --storage or set TRACER_STORAGE_PATH)"
        )
    query = QueryEngine(storage)
    try:
        yield query
    finally:
        query.close()


def storage_option(command: F) -> F:
    return click.option(
        "--storage",
        envvar="TRACER_STORAGE_PATH",
        default="./.tracer",
        show_default=True,
        help="Where the runs are (a directory, a .db file or a backend URL);"
        " TRACER_STORAGE_PATH sets it too.",
    )(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(
        command
    )


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, allow_nan=False))


def number(value: Any) -> str:
    """A metric value for a table: short, exact enough, NaN/Inf spelled out."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4e}"
        return f"{value:.6g}"
    return str(value)


def status_text(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{escape(status)}[/]"


def severity_text(severity: str) -> str:
    return f"[{SEVERITY_STYLES.get(severity, 'white')}]{escape(severity)}[/]"


def plain(value: Any) -> str:
    """A stored string (a name, a message, an error) made safe to print as rich markup."""
    return escape(str(value))


def timestamp(seconds: Any) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(float(seconds)).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: Any) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "-"
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{float(seconds):.1f}s"
