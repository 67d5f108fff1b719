"""Browser tests: not collected without playwright or without Chromium at /usr/bin/chromium
(tox's `browser` env installs both: tests/browser/ensure_chromium.py). The tests/conftest.py
fixture applies too: a fresh cwd per test, so each test's ./.tracer is its own."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.ensure_chromium import INSTALL_HINT
from tests.browser.page_check import chromium_browser, chromium_path
from tracer.core import lifecycle

if TYPE_CHECKING:
    from playwright.sync_api import Browser

_MISSING: list[str] = []
if importlib.util.find_spec("playwright") is None:
    _MISSING.append("playwright not installed (pip install playwright)")
if not os.access(chromium_path(), os.X_OK):
    _MISSING.append(f"no Chromium at {chromium_path()} ({INSTALL_HINT})")
if _MISSING:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header() -> str | None:
    if _MISSING:
        return f"tests/browser not collected: {'; '.join(_MISSING)}"
    return None


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on 2 cores: one torch thread is faster and leaves a core to Chromium."""
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    threads = torch.get_num_threads() if torch is not None else 0
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)
        # A test that failed mid-training must not leave its run to this process's atexit.
        lifecycle._end_all("failed", "left open by a test")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session; `check_page` opens a fresh context per page."""
    with chromium_browser() as browser:
        yield browser
