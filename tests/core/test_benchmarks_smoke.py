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


@pytest.mark.slow
def test_bench_core_quick_runs_and_prints_the_table() -> None:
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} is missing")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert HEADER in done.stdout, done.stdout[-4000:]
