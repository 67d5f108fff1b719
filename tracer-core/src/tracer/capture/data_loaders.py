"""The data loaders alive in the process, asked for when the probe sees one batch repeated:
they tell a loader that has more batches than the one arriving (`next(iter(loader))` at each
step, a sampler that returns the same indices) from full-batch training on purpose (the whole
dataset as one tensor, or a loader of one batch), which must not be reported.

Found by a walk over the objects the garbage collector tracks, on the writer thread, once per
streak of repeated batches: tens of milliseconds in a large process, never on the training
thread and never while batches differ.
"""

from __future__ import annotations

import gc
import logging
import sys

logger = logging.getLogger(__name__)

MAX_LOADERS = 8  # described in the event; more would only lengthen it


def multi_batch_loaders() -> list[dict[str, int]]:
    """Each live `torch.utils.data.DataLoader` of more than one batch: its number of batches
    and its batch size (0 when it has none, e.g. a batch sampler). Loaders without a length
    (an iterable dataset) say nothing and are left out."""
    data = sys.modules.get("torch.utils.data")
    if data is None:
        return []
    loader_type = data.DataLoader
    found: list[dict[str, int]] = []
    try:
        objects = gc.get_objects()
    except Exception:  # pragma: no cover - an interpreter without gc introspection
        return []
    for candidate in objects:
        if not issubclass(type(candidate), loader_type):  # type(): no proxy __class__ call
            continue
        try:
            batches = len(candidate)
        except Exception:  # no __len__ (an IterableDataset), or a dataset that fails
            continue
        if batches > 1:
            size = candidate.batch_size
            found.append({"batches": batches, "batch_size": int(size) if size else 0})
            if len(found) == MAX_LOADERS:
                break
    del objects
    return found
