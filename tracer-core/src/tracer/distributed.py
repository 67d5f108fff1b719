"""Rank and world size, found when a run starts (never at import, never importing torch).

The ground floor: the run, the collectors and the detectors of a distributed job all ask
here, and this module imports nothing of Tracer's.
"""

from __future__ import annotations

import os
import sys


def rank_and_world_size() -> tuple[int, int]:
    """torch.distributed's view when it is initialized, else RANK / WORLD_SIZE, else (0, 1)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank()), int(dist.get_world_size())
        except Exception:  # a half-initialized process group must not stop a run
            pass
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1
