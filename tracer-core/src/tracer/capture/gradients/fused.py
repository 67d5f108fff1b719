"""The per-step gradient norms in one read of every gradient: an opt-in Triton kernel.

`kernels.step_summary` needs, per gradient tensor, its float32 sum of squares (for the L2
norm) and its largest |g|. torch's foreach kernels take two passes (L2, then inf-norm), so
every gradient is read twice per optimizer step, and on a GPU that read is the cost (2 x
0.238 ms for GPT-2 small's 498 MB of float32 gradients on an H100). Here one read gives
both, deterministically (no float atomics):

1. `_partials_kernel`, one launch per (dtype, 16-byte alignment) group of gradients (one in
   the usual model): each program reads up to `chunk_blocks` x `block` values of one tensor
   and writes their (sum of squares, max |g|) to its own slot; a tensor's slots are
   consecutive.
2. `_per_tensor_kernel`, one launch: each program reduces one tensor's slots, in order.
Then torch takes the square roots and the global max, and `step_summary` builds the same row
as on the foreach path.

Values accumulate in float32 (fp32, fp16, bf16 gradients). `tl.maximum` may drop NaN, so a
max is replaced by its sum of squares when that is NaN (a sum of squares is NaN exactly when
a value is): NaN reaches both the norm and the max; an Inf makes both infinite. An empty
tensor adds 0 to its sum and nothing to the max.

The kernels read raw addresses from int64 tables on the device, uploaded from pinned memory
(asynchronously: no host sync) only when the gradients' sizes or addresses change.

Used when `fused_gradient_kernel` is set, the gradients are CUDA tensors (or Triton's
interpreter is on, `TRITON_INTERPRET=1`: how the tests run it on the CPU), triton imports,
and every gradient is dense fp32/fp16/bf16; otherwise that step takes the foreach path. If
importing triton, compiling or launching raises, one warning is logged and the foreach path
is used for the rest of the process: training never breaks on it. A fault inside a running
kernel (an illegal address) cannot be caught so: one reason the setting is opt-in until it
is verified on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch
    import triton.language as tl  # type: ignore[import-not-found, import-untyped, unused-ignore]
else:
    tl = None  # bound to triton.language by _compiled(), before the kernels are jitted

logger = logging.getLogger(__name__)

BLOCK = 4096  # values per load step of a program (16 per thread at 8 warps)
CHUNK_BLOCKS = 16  # blocks per program: 65,536 values, 256 KiB of float32
REDUCE_BLOCK = 128  # partial slots per load step of the per-tensor reduction
TABLE_COLUMNS = 5  # tensor, first block, end of full blocks, end of values, slot

_compiled_kernels: Optional[tuple[Any, Any]] = None
_failure: Optional[str] = None  # set once; the fused path is then off for the process


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is requested (then CPU tensors qualify)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def _partials_kernel(
    table: tl.tensor,
    addresses: tl.tensor,
    partials: tl.tensor,
    BLOCK: tl.constexpr,
    DTYPE: tl.constexpr,
    ALIGNED: tl.constexpr,
) -> None:
    """One chunk of one tensor -> its (sum of squares, max |g|) in slot `table[p, 4]`."""
    row = table + tl.program_id(0).to(tl.int64) * 5  # TABLE_COLUMNS
    base = tl.load(addresses + tl.load(row)).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        base = tl.multiple_of(base, 16)
    begin = tl.load(row + 1)
    end = tl.load(row + 2)
    stop = tl.load(row + 3)
    slot = tl.load(row + 4)
    lanes = tl.arange(0, BLOCK)
    squares = tl.zeros([BLOCK], dtype=tl.float32)
    peak = tl.zeros([BLOCK], dtype=tl.float32)
    for block in range(begin, end):  # full blocks: unmasked, so loads vectorize
        values = tl.load(base + block * BLOCK + lanes).to(tl.float32)
        squares += values * values
        peak = tl.maximum(peak, tl.abs(values))
    index = end * BLOCK + lanes  # the tensor's partial last block, if this chunk holds it
    values = tl.load(base + index, mask=index < stop, other=0.0).to(tl.float32)
    squares += values * values
    peak = tl.maximum(peak, tl.abs(values))
    total = tl.sum(squares, axis=0)
    top = tl.where(total == total, tl.max(peak, axis=0), total)  # NaN wins
    tl.store(partials + 2 * slot, total)
    tl.store(partials + 2 * slot + 1, top)


def _per_tensor_kernel(
    ranges: tl.tensor,
    partials: tl.tensor,
    out: tl.tensor,
    count: tl.tensor,
    REDUCE_BLOCK: tl.constexpr,
) -> None:
    """Tensor t's slots, in order -> out[t] = sum of squares, out[count + t] = max |g|."""
    tensor = tl.program_id(0)
    first = tl.load(ranges + 2 * tensor)
    stop = tl.load(ranges + 2 * tensor + 1)
    lanes = tl.arange(0, REDUCE_BLOCK)
    squares = tl.zeros([REDUCE_BLOCK], dtype=tl.float32)
    peak = tl.zeros([REDUCE_BLOCK], dtype=tl.float32)
    for begin in range(first, stop, REDUCE_BLOCK):
        slot = begin + lanes
        present = slot < stop
        squares += tl.load(partials + 2 * slot, mask=present, other=0.0)
        peak = tl.maximum(peak, tl.load(partials + 2 * slot + 1, mask=present, other=0.0))
    total = tl.sum(squares, axis=0)
    top = tl.where(total == total, tl.max(peak, axis=0), total)
    tl.store(out + tensor, total)
    tl.store(out + count + tensor, top)


def _compiled() -> tuple[Any, Any]:
    """The two kernels, jitted on first use (importing triton here, never at import)."""
    global _compiled_kernels, tl
    if _compiled_kernels is None:
        import triton  # type: ignore[import-not-found, import-untyped, unused-ignore]
        import triton.language as language  # type: ignore[import-not-found, import-untyped, unused-ignore]

        tl = language
        _compiled_kernels = (triton.jit(_partials_kernel), triton.jit(_per_tensor_kernel))
    return _compiled_kernels


def _give_up(error: BaseException) -> None:
    """Log the one warning and turn the fused path off for the rest of the process."""
    global _failure
    if _failure is not None:
        return
    _failure = f"{type(error).__name__}: {error}"
    logger.warning(
        "Tracer's fused gradient kernel (fused_gradient_kernel=True) is unavailable (%s);"
        " gradient norms use torch's foreach kernels for the rest of this process.",
        _failure,
        exc_info=not isinstance(error, ImportError),
    )


class _Tables:
    """The device tables for one layout (sizes, dtypes, alignments) of gradients; the
    addresses have their own, re-uploaded alone when the gradients move (set_to_none)."""

    def __init__(self, layout: tuple[Any, ...], device: Any) -> None:
        self.layout = layout
        self.device = device
        self.groups: list[tuple[Any, bool, Any, int]] = []  # dtype, aligned, table, programs
        self.ranges: Any = None  # (tensors x 2): first slot, end slot
        self.slots = 0
        self.addresses: tuple[int, ...] = ()
        self.address_table: Any = None


class FusedSummary:
    """One watch's fused norms: `norms_and_max(grads)` or None (take the foreach path)."""

    def __init__(self, block: int = BLOCK, chunk_blocks: int = CHUNK_BLOCKS) -> None:
        self.block = block  # a power of two; tests pass small ones to cross chunk edges
        self.chunk_blocks = chunk_blocks
        self._tables: Optional[_Tables] = None
        self._noted_device = False

    def norms_and_max(self, grads: Sequence[torch.Tensor]) -> Optional[tuple[Any, Any]]:
        """(per-tensor float32 L2 norms, global max |g|) as device tensors, or None."""
        if _failure is not None or not grads:
            return None
        device = grads[0].device
        if device.type != "cuda" and not interpreting():
            if not self._noted_device:
                self._noted_device = True
                logger.info(
                    "fused_gradient_kernel applies to CUDA gradients; %s uses foreach.", device
                )
            return None
        found = _layout(grads, device)
        if found is None:
            return None  # a dtype or layout the kernel does not read: foreach, this step
        try:
            return self._launch(len(grads), *found, device)
        except Exception as error:  # triton missing, a compile or launch error
            _give_up(error)
            return None

    def _launch(
        self, count: int, layout: tuple[Any, ...], addresses: tuple[int, ...], device: Any
    ) -> tuple[Any, Any]:
        import torch

        partials_kernel, per_tensor_kernel = _compiled()
        tables = self._tables
        if tables is None or tables.layout != layout or tables.device != device:
            tables = self._tables = self._build(layout, device)
        if addresses != tables.addresses:
            tables.addresses = addresses
            tables.address_table = _upload(list(addresses), device)
        partials = torch.empty(2 * max(tables.slots, 1), dtype=torch.float32, device=device)
        out = torch.empty((2, count), dtype=torch.float32, device=device)
        names = _supported_dtypes()
        guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with guard:  # Triton launches on the current device: make it the gradients'
            for dtype, aligned, table, programs in tables.groups:
                partials_kernel[(programs,)](
                    table,
                    tables.address_table,
                    partials,
                    BLOCK=self.block,
                    DTYPE=getattr(tl, names[dtype]),
                    ALIGNED=aligned,
                    num_warps=8,
                )
            per_tensor_kernel[(count,)](
                tables.ranges, partials, out, count, REDUCE_BLOCK=REDUCE_BLOCK, num_warps=1
            )
        return out[0].sqrt(), out[1].max()

    def _build(self, layout: tuple[Any, ...], device: Any) -> _Tables:
        """Program rows per (dtype, aligned) group, slot ranges per tensor; one upload."""
        span = self.block * self.chunk_blocks
        rows: dict[tuple[Any, bool], list[list[int]]] = {}
        ranges: list[int] = []
        slot = 0
        for tensor, (numel, dtype, aligned) in enumerate(layout):
            group = rows.setdefault((dtype, aligned), [])
            full = numel // self.block
            ranges.append(slot)
            for start in range(0, numel, span):
                first = start // self.block
                end = min(first + self.chunk_blocks, full)
                stop = numel if start + span >= numel else end * self.block
                group.append([tensor, first, end, stop, slot])
                slot += 1
            ranges.append(slot)
        flat = [value for group in rows.values() for row in group for value in row]
        table = _upload(flat + ranges, device)
        tables = _Tables(layout, device)
        offset = 0
        for (dtype, aligned), group in rows.items():
            size = len(group) * TABLE_COLUMNS
            if group:
                tables.groups.append((dtype, aligned, table[offset : offset + size], len(group)))
            offset += size
        tables.ranges = table[offset:]
        tables.slots = slot
        return tables


def _upload(values: list[int], device: Any) -> Any:
    """An int64 tensor on `device`; pinned first, so the copy does not wait for the stream."""
    import torch

    host = torch.tensor(values, dtype=torch.int64)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _layout(grads: Sequence[Any], device: Any) -> Optional[tuple[tuple[Any, ...], tuple[int, ...]]]:
    """((numel, dtype, 16-byte aligned) per gradient, their addresses), or None if one is not
    a dense fp32/fp16/bf16 tensor on `device`."""
    supported = _supported_dtypes()
    layout = []
    addresses = []
    for grad in grads:
        if grad.dtype not in supported or grad.device != device or not _dense(grad):
            return None
        address = grad.data_ptr()
        layout.append((grad.numel(), grad.dtype, address % 16 == 0))
        addresses.append(address)
    return tuple(layout), tuple(addresses)


def _dense(grad: Any) -> bool:
    """Whether the values fill `numel` consecutive elements (contiguous, channels_last...)."""
    if grad.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted(zip(grad.stride(), grad.shape, strict=True)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


@functools.cache
def _supported_dtypes() -> dict[Any, str]:
    """torch dtype -> the name of the triton.language dtype the kernel reads it as."""
    import torch

    return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
