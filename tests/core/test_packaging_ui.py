"""The wheel of tracer-core ships the dashboard: its modules and the page's static files
(hatchling packs every file under src/tracer that git does not ignore)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "tracer-core"


@pytest.mark.slow
def test_wheel_ships_the_dashboard_and_its_page(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=CORE,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("tracer_core-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tracer/ui/app.py", "tracer/ui/api.py", "tracer/ui/server.py"} <= names
    static = sorted(
        p.relative_to(CORE / "src").as_posix()
        for folder in ("ui/static", "web")  # web/: the modules shared with the report
        for p in (CORE / "src" / "tracer" / folder).rglob("*")
        if p.is_file()
    )
    assert static, "the page is missing from the source tree"
    assert set(static) <= names, sorted(set(static) - names)
