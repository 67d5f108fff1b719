"""`tracer ui`: a live dashboard over the store training writes to, while it trains.

`api` builds the JSON answers from a `QueryEngine` (no web framework needed, testable
alone); `live` turns store polls into server-sent events; `app` is the Starlette app
(routes, the CSP and token guard, static files); `server` runs it under uvicorn. Starlette
and uvicorn are the optional extra `tracer-core[ui]`: only `app` and `server` import them,
and nothing here is imported by `import tracer`. The page itself is `static/`.
"""

from __future__ import annotations

INSTALL_HINT = "the dashboard needs starlette and uvicorn: pip install 'tracer-core[ui]'"
