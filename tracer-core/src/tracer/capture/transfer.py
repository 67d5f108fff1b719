"""Device-to-host copies that never wait on the training thread.

`copy_to_host(tensor)` enqueues the copy (into pinned memory, on the current CUDA stream)
and returns a `HostCopy` whose `get()`, called on the writer thread, waits for that copy
alone. On the CPU it is a plain clone, so later in-place writes to the source cannot change
what was captured.
"""

from __future__ import annotations

from typing import Any


class HostCopy:
    """A tensor on its way to host memory; `get()` blocks (off the training thread) until there."""

    __slots__ = ("_event", "_host")

    def __init__(self, host: Any, event: Any) -> None:
        self._host = host
        self._event = event

    def get(self) -> Any:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host


def copy_to_host(tensor: Any) -> HostCopy:
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cuda":
        return HostCopy(tensor.clone(), None)
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    event = torch.cuda.Event()  # type: ignore[no-untyped-call]
    event.record()
    return HostCopy(host, event)
