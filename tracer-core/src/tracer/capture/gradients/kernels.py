"""Gradient statistics computed on the gradients' device, without reading anything back.

Two levels of detail:
- `step_summary`: every optimizer step, two fused `_foreach_norm` kernels (L2 and max-abs)
  over all watched gradients, reduced in float32. The result is one small device vector:
  [global L2 norm, global max |g|, per-layer L2 norms...]. A layer's norm is non-finite
  exactly when that layer has a NaN or Inf gradient (or a sum of squares beyond float32).
  With `fused_gradient_kernel` the per-layer norms and the max come instead from one read of
  each gradient (`fused.py`, Triton); everything after them is the same code.
- `full_stats`: at checkpoints only, the seed reference's per-tensor statistics
  (norm, mean, std, min, max, num_zeros, num_nans, num_infs) as a (layers x 8) float64
  device tensor, one tensor at a time in float32 (so the temporary is at most one float32
  copy of the largest gradient). `std` is the population standard deviation.

Sharded parameters (FSDP2's DTensors, FSDP1's flat parameters) hold only a shard per rank:
`step_summary` then all-reduces the per-layer sums of squares (and the max |g|) over the
sharding group, so the norms are the global ones. Every rank captures at the same optimizer
steps, so these collectives run on all ranks alike. Checkpoint statistics stay per shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

    from tracer.capture.gradients.fused import FusedSummary

FULL_STAT_NAMES = ("norm", "mean", "std", "min", "max", "num_zeros", "num_nans", "num_infs")
SUMMARY_HEAD = 2  # global norm, global max |g|
MISSING = -1.0  # the per-layer norm of a layer that has no gradient at this capture


def shard_group(model: Any, params: Sequence[Any]) -> Any:
    """The process group to reduce norms over when `params` are sharded, else None."""
    if not params:
        return None
    first = params[0]
    mesh = getattr(first, "device_mesh", None)
    if mesh is not None:  # a DTensor: FSDP2 / fully_shard
        sharded = [i for i, p in enumerate(first.placements) if p.is_shard()]
        return mesh.get_group(sharded[0]) if sharded else None
    if type(first).__name__ == "FlatParameter" or getattr(first, "_is_flat_param", False):
        import torch.distributed as dist

        return getattr(model, "process_group", None) or dist.group.WORLD
    return None


def step_summary(
    grads: list[torch.Tensor],
    layer_index: Any,
    num_layers: int,
    group: Any = None,
    fused: Optional[FusedSummary] = None,
) -> Any:
    """[global_norm, max_abs, norm_0 .. norm_{L-1}] as a float32 device tensor.

    `grads` are the present gradients; `layer_index` is None when they are all the watched
    layers in order, else a device index tensor placing them among `num_layers`. Layers
    without a gradient read MISSING (-1: no norm is negative), never 0 or NaN, so they are
    mistaken neither for a zero gradient nor for a non-finite one. `fused` (the opt-in
    one-read kernel) computes the per-layer norms and the max when it can; when it returns
    None (not CUDA, triton missing or failed, an unsupported dtype) the foreach kernels do.
    """
    import torch

    measured = fused.norms_and_max(grads) if fused is not None else None
    norms, top = measured if measured is not None else foreach_norms_and_max(grads)
    if group is not None:
        return _sharded_summary(norms, top, layer_index, num_layers, group)
    head = torch.stack([torch.linalg.vector_norm(norms), top])
    if layer_index is not None:
        full = torch.full((num_layers,), MISSING, dtype=torch.float32, device=norms.device)
        full.index_copy_(0, layer_index, norms)
        norms = full
    return torch.cat([head, norms])


def foreach_norms_and_max(grads: list[torch.Tensor]) -> tuple[Any, Any]:
    """(per-tensor float32 L2 norms, global max |g|): torch's foreach kernels, two reads."""
    import torch

    norms = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))
    return norms, _max_abs(grads, norms)


def _max_abs(grads: list[torch.Tensor], norms: Any) -> Any:
    """The largest |g| over all gradients; an empty one (a rank's empty shard) has none.

    On CUDA one fused inf-norm kernel. On the CPU that kernel is ~20x slower than the L2
    one (5.1 ms against 0.25 ms for 1.6M float32 values, one thread), while per-tensor
    `aminmax` takes 0.27 ms, so the CPU takes max(max, -min); NaN propagates either way.
    """
    import torch

    present = [g for g in grads if g.numel()]
    if not present:
        return norms.new_zeros(())
    if present[0].device.type == "cpu":
        extremes = [torch.aminmax(g) for g in present]
        lows = torch.stack([low for low, _ in extremes]).to(torch.float32)
        highs = torch.stack([high for _, high in extremes]).to(torch.float32)
        return torch.maximum(highs.max(), lows.min().neg())
    return torch.stack(torch._foreach_norm(present, float("inf"), dtype=torch.float32)).max()


def max_abs(grads: Sequence[torch.Tensor]) -> Any:
    """The largest |g| of `grads` as a float32 device scalar, NaN or Inf exactly when some
    value is (None when there is no value): the non-finite check of gradients that no capture
    summarised this step. A DTensor gives its local shard, with no collective."""
    local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    present = [g for g in local if g.numel()]
    if not present:
        return None
    return _max_abs(present, None)


def _sharded_summary(norms: Any, top: Any, layer_index: Any, num_layers: int, group: Any) -> Any:
    """`step_summary` of sharded gradients: one SUM all-reduce of [squares, presence], one MAX."""
    import torch
    import torch.distributed as dist

    squares = torch.zeros((2, num_layers), dtype=torch.float32, device=norms.device)
    if layer_index is None:
        squares[0] = norms.square()
        squares[1] = 1.0
    else:
        squares[0].index_copy_(0, layer_index, norms.square())
        squares[1].index_fill_(0, layer_index, 1.0)
    dist.all_reduce(squares, group=group)
    dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
    layer_norms = torch.where(squares[1] > 0, squares[0].sqrt(), MISSING)
    head = torch.stack([squares[0].sum().sqrt(), top])
    return torch.cat([head, layer_norms])


def full_stats(grads: Sequence[torch.Tensor | None]) -> Any:
    """(layers x 8) float64 device tensor of FULL_STAT_NAMES; a missing gradient is all NaN."""
    import torch

    rows = []
    device = next((g.device for g in grads if g is not None), torch.device("cpu"))
    missing = torch.full((len(FULL_STAT_NAMES),), float("nan"), dtype=torch.float64, device=device)
    for grad in grads:
        if grad is None or grad.numel() == 0:
            rows.append(missing)
            continue
        if hasattr(grad, "to_local"):  # a DTensor: this rank's shard, no collective
            grad = grad.to_local()
        values = grad.detach().reshape(-1).float()
        parts = (
            torch.linalg.vector_norm(values),
            values.mean(),
            values.std(correction=0),
            values.min(),
            values.max(),
            (values == 0).sum(),  # int64: exact counts for any tensor size
            values.isnan().sum(),
            values.isinf().sum(),
        )
        rows.append(torch.stack([part.to(torch.float64) for part in parts]))
    if not rows:
        return torch.empty((0, len(FULL_STAT_NAMES)), dtype=torch.float64)
    return torch.stack(rows)
