"""The PostgreSQL tests run against the real server `tools/postgres_server.py` starts
(`tox -e postgres`); without one (no TRACER_TEST_POSTGRES_URL) they are skipped. Each test
gets a schema of its own in the test database, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.postgres.helpers import drop_schemas


@pytest.fixture(autouse=True)
def postgres_server() -> Iterator[str]:
    url = os.environ.get("TRACER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: run `python tools/postgres_server.py -- pytest ...`")
    yield url
    drop_schemas()
