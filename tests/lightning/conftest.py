"""tracer-lightning tests: not collected without torch and Lightning; one torch thread (2 cores,
tiny models); no run left open by a failed test. The tests/conftest.py fixture applies too: a
fresh cwd per test, so the default ./.tracer and Lightning's checkpoints land in tmp_path."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator

import pytest

from tracer.core import lifecycle

_NEEDED = ("torch", "lightning_utilities")
_MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if not any(importlib.util.find_spec(n) for n in ("lightning", "pytorch_lightning")):
    _MISSING.append("lightning or pytorch_lightning")
if _MISSING:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header() -> str | None:
    if _MISSING:
        return f"tests/lightning not collected: {', '.join(_MISSING)} not installed"
    return None


@pytest.fixture(autouse=True)
def lightning_environment() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "pytorch_lightning")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            yield
    finally:
        torch.set_num_threads(threads)
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
        # A test that failed mid-fit must not leave its run to this process's atexit.
        lifecycle._end_all("failed", "left open by a test")
