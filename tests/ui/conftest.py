"""The dashboard's tests need its extra (`tracer-core[ui]`: starlette, uvicorn) and an HTTP
client for Starlette's TestClient (httpx2, or httpx); each module skips itself without them
(`pytest.importorskip` before its imports), so `pytest tests` runs anywhere."""
