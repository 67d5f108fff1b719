"""`tracer ui`: the live dashboard over a store (`tracer.ui`; needs `tracer-core[ui]`)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import click

from tracer.cli.common import MissingExtra, errors, fails_cleanly, storage_option


@click.command("ui")
@storage_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback lets others on the network in:"
    " use --token then.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--token",
    envvar="TRACER_UI_TOKEN",
    help="A secret every request must carry (?token= or Authorization: Bearer);"
    " TRACER_UI_TOKEN sets it too.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@fails_cleanly
def ui_command(
    storage: str, host: str, port: int, token: Optional[str], open_browser: bool
) -> None:
    """Serve a live dashboard of the runs in the store, while they train (Ctrl-C stops it).

    It only reads the store, and fetches nothing from the network."""
    try:
        from tracer.ui.server import require, serve

        require()
    except ImportError as error:
        raise MissingExtra(str(error)) from None
    if "://" not in storage and not os.path.exists(storage):
        errors.print(
            f"no Tracer data at {storage!r} yet: the dashboard shows runs once training"
            " writes there (pass --storage or set TRACER_STORAGE_PATH)"
        )

    def announce(url: str) -> None:
        click.echo(f"Tracer dashboard on {url}  (Ctrl-C stops it)")

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops on Ctrl-C by itself too
        serve(storage, host, port, token, open_browser, announce)
