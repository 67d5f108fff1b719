"""`tracer ui` without its extra says what to install (runs with or without starlette:
the child hides it)."""

from __future__ import annotations

import subprocess
import sys

HIDE = (
    "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
    "sys.argv = ['tracer', 'ui']; from tracer.cli import main; main()"
)


def test_tracer_ui_without_starlette_names_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HIDE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 5, done.stderr  # EXIT_MISSING_EXTRA
    assert "pip install 'tracer-core[ui]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_import_tracer_ui_needs_no_starlette() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
        "import tracer.ui, tracer.ui.api, tracer.ui.live, tracer.ui.server, tracer.cli"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
