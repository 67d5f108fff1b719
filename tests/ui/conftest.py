"""The dashboard's tests need its extra (`tracer-core[ui]`: starlette, uvicorn) and an HTTP
client for Starlette's TestClient; without them the whole directory is skipped."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
