"""tracer-hf tests: not collected without torch, transformers and accelerate (`tox -e hf`
installs them); one torch thread (2 cores, tiny models); no HuggingFace Hub access; no run
left open by a failed test. The tests/conftest.py fixture applies too: a fresh cwd per test,
so the default ./.tracer lands in tmp_path."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tracer.core import lifecycle

_NEEDED = ("torch", "transformers", "accelerate")
_MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if _MISSING:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header() -> str | None:
    if _MISSING:
        return f"tests/hf not collected: {', '.join(_MISSING)} not installed"
    return None


@pytest.fixture(autouse=True)
def hf_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        # A test that failed mid-training must not leave its run to this process's atexit.
        lifecycle._end_all("failed", "left open by a test")
