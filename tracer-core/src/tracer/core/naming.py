"""Run ids and readable run names."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection

_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "daring",
    "eager",
    "fair",
    "gentle",
    "golden",
    "keen",
    "lively",
    "lucid",
    "mellow",
    "nimble",
    "quiet",
    "rapid",
    "serene",
    "steady",
    "swift",
    "vivid",
    "warm",
    "wise",
)
_NOUNS = (
    "atlas",
    "breeze",
    "cedar",
    "comet",
    "delta",
    "ember",
    "falcon",
    "fjord",
    "glacier",
    "harbor",
    "heron",
    "lagoon",
    "meadow",
    "nebula",
    "orbit",
    "pine",
    "quartz",
    "river",
    "summit",
    "tide",
    "valley",
    "willow",
    "zephyr",
)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def random_run_name() -> str:
    """A name people can say aloud, e.g. "brisk-heron-3f9a"."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"


def free_name(wanted: str, taken: Collection[str]) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`... the first not in `taken`."""
    if wanted not in taken:
        return wanted
    number = 2
    while f"{wanted}-{number}" in taken:
        number += 1
    return f"{wanted}-{number}"
