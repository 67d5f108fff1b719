"""Launching a test's training script on two CPU processes with torchrun (gloo).

Shared by the distributed tests of every tox environment: a free port, a clean Tracer
environment (no TRACER_STORAGE_PATH / TRACER_MODE from the caller), the repository on
PYTHONPATH so scripts import `tests.*`, one torch thread per rank, and a bounded wait whose
failure shows the workers' stderr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).parents[1]
TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_torchrun(
    script: Path, args: Sequence[object], cwd: Path, nproc: int = 2, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `script args...` on `nproc` ranks in `cwd`; fails the test unless all exit 0."""
    # The repository first, then the caller's path (a checkout's sources run against an env
    # that has another copy of tracer installed).
    path = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    env["HF_HUB_OFFLINE"] = "1"
    for name in ("TRACER_STORAGE_PATH", "TRACER_MODE"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += [f"--master_port={free_port()}", str(script), *map(str, args)]
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun {script.name} did not finish in {timeout:.0f} s: {error.stderr!r}")
    assert done.returncode == 0, done.stderr[-4000:]
    return done
