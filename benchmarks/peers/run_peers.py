"""Tracer beside TensorBoard, wandb (offline), MLflow (SQLite) and trackio, on this machine.

    python benchmarks/peers/run_peers.py            # full run (about 10 minutes on 2 cores)
    python benchmarks/peers/run_peers.py --quick    # a smaller smoke run (about 2 minutes)
    python -m tox -e peers [-- --quick]             # the same, peers installed at their pins

The markdown report goes to stdout, progress (and every banner the peers print) to stderr.
A peer that cannot be imported or run here is reported as such; the rest still runs.
See benchmarks/peers/README.md for what is measured and how each peer is configured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from adapters import ADAPTERS, Adapter, MlflowAdapter  # noqa: E402
from common import isolated_environment, progress, stdout_to_stderr  # noqa: E402
from report import Results, render  # noqa: E402
from workloads import (  # noqa: E402
    FULL,
    QUICK,
    bench_durability,
    bench_imports,
    bench_logging,
)

T = TypeVar("T")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    parser.add_argument(
        "--tools",
        default=",".join(ADAPTERS),
        help="comma-separated subset of: " + ", ".join(ADAPTERS) + " (tracer is always run)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated workloads to skip: logging, durability, gradients, imports",
    )
    return parser.parse_args(argv)


def guarded(name: str, work: Callable[[], T]) -> T | None:
    """Run one workload; a failure is reported on stderr and leaves its rows out."""
    try:
        return work()
    except Exception:
        progress(f"{name} failed:\n{traceback.format_exc()}")
        return None


def available_adapters(keys: list[str], skipped: dict[str, str]) -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    for key in keys:
        adapter = ADAPTERS[key]()
        reason = adapter.unavailable()
        if reason is None:
            adapters[key] = adapter
        else:
            skipped[key] = reason
            progress(f"{key}: not run: {reason}")
    return adapters


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    keys = ["tracer"] + [
        k.strip() for k in args.tools.split(",") if k.strip() in ADAPTERS and k.strip() != "tracer"
    ]
    report_fd = stdout_to_stderr()
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="tracer-peers-"))
    try:
        env = isolated_environment(scratch / "env")
        os.environ.update(env)  # before any peer is imported
        skipped: dict[str, str] = {}
        adapters = available_adapters(keys, skipped)
        if "mlflow" in adapters:
            template = guarded("MLflow schema", lambda: MlflowAdapter.prepare_template(scratch))
            if template is None:
                skipped["mlflow"] = "could not create its SQLite schema (see stderr)"
                adapters.pop("mlflow")
        results = Results(sizes=sizes, quick=args.quick, keys=keys, skipped=skipped)
        runs = scratch / "runs"
        runs.mkdir()
        if "imports" not in skip:
            results.imports = guarded("imports", lambda: bench_imports(adapters, sizes, env)) or {}
        if "logging" not in skip:
            results.logging = guarded("logging", lambda: bench_logging(adapters, runs, sizes))
        if "durability" not in skip:
            kills = guarded("durability", lambda: bench_durability(adapters, runs, sizes, env))
            results.kills = kills or {}
        if "gradients" not in skip:
            from gradients import bench_gradients

            grads = guarded(
                "gradients",
                lambda: bench_gradients(
                    sizes.grad_width, sizes.grad_steps, sizes.grad_rounds, runs, "wandb" in adapters
                ),
            )
            if grads is not None:
                results.gradients, results.grad_parameters = grads
        results.wall_s = time.perf_counter() - began
        report = render(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with os.fdopen(report_fd, "w", encoding="utf-8") as out:
        out.write(report)
    progress(f"done in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
