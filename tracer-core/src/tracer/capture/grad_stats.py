"""Gradient statistics computed on the gradients' device, without reading anything back.

Two levels of detail:
- `step_summary`: every optimizer step, two fused `_foreach_norm` kernels (L2 and max-abs)
  over all watched gradients, reduced in float32. The result is one small device vector:
  [global L2 norm, global max |g|, per-layer L2 norms...]. A layer's norm is non-finite
  exactly when that layer has a NaN or Inf gradient (or a sum of squares beyond float32).
- `full_stats`: at checkpoints only, the seed reference's per-tensor statistics
  (norm, mean, std, min, max, num_zeros, num_nans, num_infs) as a (layers x 8) float64
  device tensor, one tensor at a time in float32 (so the temporary is at most one float32
  copy of the largest gradient). `std` is the population standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FULL_STAT_NAMES = ("norm", "mean", "std", "min", "max", "num_zeros", "num_nans", "num_infs")
SUMMARY_HEAD = 2  # global norm, global max |g|
MISSING = -1.0  # the per-layer norm of a layer that has no gradient at this capture


def step_summary(grads: list[torch.Tensor], layer_index: Any, num_layers: int) -> Any:
    """[global_norm, max_abs, norm_0 .. norm_{L-1}] as a float32 device tensor.

    `grads` are the present gradients; `layer_index` is None when they are all the watched
    layers in order, else a device index tensor placing them among `num_layers`. Layers
    without a gradient read MISSING (-1: no norm is negative), never 0 or NaN, so they are
    mistaken neither for a zero gradient nor for a non-finite one.
    """
    import torch

    norms = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))
    max_abs = torch.stack(torch._foreach_norm(grads, float("inf"), dtype=torch.float32))
    head = torch.stack([torch.linalg.vector_norm(norms), max_abs.max()])
    if layer_index is not None:
        full = torch.full((num_layers,), MISSING, dtype=torch.float32, device=norms.device)
        full.index_copy_(0, layer_index, norms)
        norms = full
    return torch.cat([head, norms])


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
