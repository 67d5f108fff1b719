"""`python -m tracer`: the `tracer` command, for environments where its script is not on
PATH (a venv not activated, `pip install --user`, a notebook's `!python -m tracer runs`)."""

from __future__ import annotations

from tracer.cli import main

if __name__ == "__main__":
    main()
