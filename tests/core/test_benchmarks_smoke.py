"""`benchmarks/bench_core.py --quick` runs to the end and prints its table.

A smoke test only: it never asserts on timings, which depend on the machine and its load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_core.py"
HEADER = "| measurement | Tracer | baseline |"


def run_quick(script: Path) -> subprocess.CompletedProcess[str]:
    """`script --quick` in a fresh interpreter, which must exit 0."""
    done = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_bench_core_quick_runs_and_prints_the_table() -> None:
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} is missing")
    done = run_quick(SCRIPT)
    assert HEADER in done.stdout, done.stdout[-4000:]


UI_SCRIPT = SCRIPT.parent / "bench_ui.py"
UI_HEADER = "| measurement | figure | target | result |"


@pytest.mark.slow
def test_bench_ui_quick_runs_and_prints_the_table() -> None:
    """The dashboard benchmark's smoke version (skipped without `tracer-core[ui]`)."""
    import importlib.util

    if not UI_SCRIPT.is_file():
        pytest.skip(f"{UI_SCRIPT} is missing")
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("needs tracer-core[ui] (starlette, uvicorn)")
    done = run_quick(UI_SCRIPT)
    assert UI_HEADER in done.stdout, done.stdout[-4000:]
    assert "| spike and NaN kept at every zoom | 0 misses |" in done.stdout, done.stdout


FRAMES_SCRIPT = SCRIPT.parent / "bench_frames.py"
FRAMES_HEADER = "| measurement | Tracer | baseline | ratio | target | pass/fail |"


@pytest.mark.slow
def test_bench_frames_quick_runs_and_prints_the_table() -> None:
    """The runs-as-data benchmark's smoke version (skipped without `tracer-core[pandas]`)."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None or importlib.util.find_spec("pandas") is None:
        pytest.skip("needs tracer-core[pandas] (pyarrow, pandas)")
    done = run_quick(FRAMES_SCRIPT)
    assert FRAMES_HEADER in done.stdout, done.stdout[-4000:]
    assert "runs_frame" in done.stdout and "peak memory" in done.stdout


REPLICAS_SCRIPT = SCRIPT.parent / "bench_replicas.py"
REPLICAS_HEADER = "| model | training step | one fingerprint | amortised per step"


@pytest.mark.slow
def test_bench_replicas_quick_runs_and_prints_the_table() -> None:
    """The weight fingerprint's cost benchmark, smoke version (needs torch)."""
    pytest.importorskip("torch")
    done = run_quick(REPLICAS_SCRIPT)
    assert REPLICAS_HEADER in done.stdout, done.stdout[-4000:]
    assert "| MLP 8 x 512, CPU" in done.stdout, done.stdout[-4000:]
