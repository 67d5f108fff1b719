"""Shared helpers: statistics, interleaving, progress, isolated environment, sizes on disk."""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

METRICS = ("loss", "acc", "lr")


def metric_values(i: int) -> dict[str, float]:
    """Three non-integral floats per step (SQLite stores integral REALs as integers)."""
    return {"loss": 1.0 / (i + 1.5), "acc": 0.5 + i * 1e-7, "lr": 3e-4}


STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[peers {time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def fmt(value: float, digits: int = 3) -> str:
    """`digits` significant digits, without exponents: 0.0123, 4.56, 789, 12,345."""
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def show(self, scale: float, unit: str, digits: int = 3) -> str:
        def num(value: float) -> str:
            return fmt(value * scale, digits)

        if self.count == 1:
            return f"{num(self.median)} {unit} (single)"
        return f"{num(self.median)} {unit} ({num(self.low)}-{num(self.high)}, n={self.count})"


def interleave(runs: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run each callable once per round, rotating the order; collect what each returns."""
    names = list(runs)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        progress(f"  round {round_index + 1}/{rounds}: {', '.join(order)}")
        for name in order:
            samples[name].append(runs[name]())
    return samples


def paired_ratios(values: dict[str, list[float]], reference: str) -> dict[str, Stats]:
    """Per-round ratio value / reference (same round), summarized; the noise mostly cancels."""
    base = values[reference]
    out: dict[str, Stats] = {}
    for name, samples in values.items():
        pairs = [s / b for s, b in zip(samples, base, strict=True) if b > 0]
        if pairs:
            out[name] = Stats.of(pairs)
    return out


def checkpoint_sqlite(path: Path) -> None:
    """Fold an SQLite file's WAL back into it, so that its size is the data's size."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def isolated_environment(root: Path) -> dict[str, str]:
    """Environment variables that keep every peer local, quiet and inside `root`.

    wandb: offline, silent, every directory under root. trackio: its SQLite under root, no
    Hugging Face Hub. MLflow: no git lookups. Applied to this process before any peer is
    imported and passed to the child processes.
    """
    dirs = {
        "WANDB_DIR": root / "wandb",
        "WANDB_CACHE_DIR": root / "wandb-cache",
        "WANDB_CONFIG_DIR": root / "wandb-config",
        "WANDB_DATA_DIR": root / "wandb-data",
        "WANDB_ARTIFACT_DIR": root / "wandb-artifacts",
        "TRACKIO_DIR": root / "trackio",
        "HF_HOME": root / "hf-home",
        "MPLCONFIGDIR": root / "mpl",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {name: str(path) for name, path in dirs.items()}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DISABLE_CODE="true",
        WANDB_DISABLE_GIT="true",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GIT_PYTHON_REFRESH="quiet",
        MLFLOW_ENABLE_ASYNC_LOGGING="false",
        PYTHONWARNINGS="ignore",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def new_dir(parent: Path, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def stdout_to_stderr() -> int:
    """Send everything written to fd 1 (peers print banners) to stderr; return a dup of fd 1.

    The table is then written to the returned descriptor only, so that stdout stays clean.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return saved
