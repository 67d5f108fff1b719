"""A `postgresql://` location: what libpq is handed, which schema Tracer's tables live in, and
how the location is shown (never with its password).

libpq reads whatever the URL leaves out from the `PG*` environment variables and from
`~/.pgpass`, so `postgresql:///tracer` with `PGHOST`/`PGUSER` set is a whole location.
Tracer adds one query parameter of its own, `schema`: the PostgreSQL schema that holds the
tables (default: the first of the role's `search_path`, usually `public`), so one database can
hold several stores. Every message Tracer writes names the location through `shown`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from tracer.config import mask_password

SCHEMES = ("postgresql", "postgres")
SCHEMA_PARAMETER = "schema"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Location:
    conninfo: str  # the URL for libpq, without Tracer's own parameters
    schema: Optional[str]  # None: the connection's default schema
    shown: str  # the URL with any password masked

    def __repr__(self) -> str:  # a dataclass repr would print conninfo, password included
        return f"Location({self.shown!r})"


def parse(url: str) -> Location:
    """The parts of a `postgresql://` (or `postgres://`) URL; `ValueError` names what is wrong
    (the message shows the URL masked)."""
    parts = urllib.parse.urlsplit(url)
    shown = mask_password(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"{shown!r} is not a postgresql:// URL")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == SCHEMA_PARAMETER]
    rest = [(key, value) for key, value in query if key != SCHEMA_PARAMETER]
    schema = schemas[-1] if schemas else None
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(
            f"schema={schema!r} in {shown!r}: a schema name is a letter or _ then up to 62"
            " letters, digits or _"
        )
    conninfo = urllib.parse.urlunsplit(
        ("postgresql", parts.netloc, parts.path, urllib.parse.urlencode(rest), "")
    )
    return Location(conninfo, schema, shown)
