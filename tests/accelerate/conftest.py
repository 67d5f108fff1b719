"""tracer-accelerate tests: not collected without torch and accelerate; one torch thread; no run
left open by a failed test (tests/conftest.py also gives each test a fresh cwd)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tracer.core import lifecycle

_MISSING = [
    n for n in ("torch", "accelerate", "tracer_accelerate") if not importlib.util.find_spec(n)
]
if _MISSING:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header() -> str | None:
    if _MISSING:
        return f"tests/accelerate not collected: {', '.join(_MISSING)} not installed"
    return None


@pytest.fixture(autouse=True)
def accelerate_environment() -> Iterator[None]:
    import torch

    from tests.accelerate.helpers import reset_accelerate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        reset_accelerate()  # each test builds its own Accelerator
        lifecycle._end_all("failed", "left open by a test")
