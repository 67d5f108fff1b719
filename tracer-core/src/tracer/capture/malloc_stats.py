"""What the C allocator has handed out and not taken back, from glibc's `mallinfo2()`: the
memory a leak of tensors or arrays grows, without the memory freed and kept.

Why not resident memory alone: a loop whose large tensors are freed and reallocated every
step while smaller ones live a little longer (a gradient capture's summaries, a log's dicts)
fragments glibc's heap. After the first free of a large block glibc raises its mmap
threshold, the next blocks come from the heap, and free pages of the heap become resident one
after another as they are reused: resident memory climbs by a megabyte a step for a hundred
steps and then stays, while the bytes in use do not move. Resident memory less the
allocator's free bytes does not correct it either: the free bytes include pages never
touched, which turn resident as they are reused.

Python's small objects live in pymalloc's arenas, outside these figures (a leak of them shows
in resident memory only). `mallinfo2` walks the allocator's free lists under its locks (tens
of microseconds, a few hundred on a fragmented heap), so the memory probe reads it only when
resident memory moved. Where there is none (glibc before 2.33, musl, macOS) there is no
in-use figure.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any, Optional

logger = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use_reader() -> Optional[Callable[[], float]]:
    """A function returning the MB glibc has handed out and not taken back (heap chunks in
    use and mmapped blocks), or None where the C library has no `mallinfo2`."""
    try:
        function: Any = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []

    def read() -> float:
        info = function()
        return float(info.uordblks + info.hblkhd) / MB

    return read
