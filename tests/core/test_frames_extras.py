"""The frame libraries are optional: `import tracer` loads none of them, and a missing one
gives an ImportError (or, from the CLI, a one-line error) naming the exact pip line.

Each check runs in a fresh interpreter. "Missing" is made real there with a meta-path finder
that refuses the library (as an environment without it would), installed before anything
else runs; Tracer itself is not touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracer.config import TracerConfig
from tracer.storage import open_storage

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_python(code: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(BLOCKER.format(blocked=set(blocked))) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def stored_run(tmp_path: Path) -> Path:
    store = open_storage(TracerConfig(project_name="p", storage_path=str(tmp_path / "s")))
    store.create_run("r1", "p", "one", time.time(), {})
    store.write_metrics("r1", {"loss": ([0, 1], [1.0, 0.5])})
    store.close()
    return tmp_path / "s"


def test_import_tracer_loads_no_frame_library() -> None:
    done = run_python(
        """
        import sys, tracer
        from tracer.analysis import QueryEngine
        import tracer.analysis.frames, tracer.analysis.notebook, tracer.cli.export_tables
        loaded = sorted(m for m in ("pyarrow", "pandas", "polars", "numpy") if m in sys.modules)
        print(loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("call", "blocked", "message"),
    [
        ("q.to_arrow('one')", ("pyarrow",), "the frame API needs pyarrow"),
        ("q.to_pandas('one')", ("pandas",), "to_pandas needs pandas"),
        ("q.to_pandas('one')", ("pyarrow", "pandas"), "to_pandas needs pandas"),
        ("q.to_polars('one')", ("polars",), "to_polars needs polars"),
        ("q.runs_frame()", ("pandas",), "runs_frame needs pandas"),
        ("q.runs_frame(as_='arrow')", ("pyarrow",), "runs_frame needs pyarrow"),
        ("q.runs_frame(as_='polars')", ("polars",), "runs_frame needs polars"),
    ],
)
def test_a_missing_library_names_its_extra(
    stored_run: Path, call: str, blocked: tuple[str, ...], message: str
) -> None:
    extra = {"pyarrow": "frames", "pandas": "pandas", "polars": "polars"}[message.split()[-1]]
    done = run_python(
        f"""
        from tracer.analysis import QueryEngine
        q = QueryEngine({str(stored_run)!r})
        try:
            {call}
        except ImportError as error:
            print(error)
        else:
            print("no error")
        """,
        blocked,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{message}, which is not installed: pip install 'tracer-core[{extra}]'"
    )


def test_export_without_pyarrow_says_what_to_install(stored_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    done = run_python(
        f"""
        import sys
        from tracer.cli import main
        sys.argv = ["tracer", "export", "one", "--format", "parquet", "-o", {str(out)!r},
                    "--storage", {str(stored_run)!r}]
        main()
        """,
        ("pyarrow",),
    )
    assert done.returncode == 5  # an optional dependency is missing
    assert "pip install 'tracer-core[frames]'" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
