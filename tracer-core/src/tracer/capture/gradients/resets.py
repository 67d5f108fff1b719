"""Were the gradients reset between two optimizer steps? The exact check behind
`gradients_not_reset`, armed by the probe after a sampled `optimizer.step()`.

After the step, two one-shot hooks go on one watched parameter: a tensor hook that sees the
fresh gradient of the next backward pass before it is accumulated, and a post-accumulate hook
that sees `param.grad` right after. If `zero_grad()` ran in between (set to None or zeroed),
the accumulated gradient is the fresh one exactly; if not, it is the last step's gradient plus
the fresh one. The gap ||accumulated - fresh|| / ||fresh|| is therefore 0 after a reset and
about ||last|| / ||fresh|| without one, whatever the optimizer, the loss scale or the
accumulation: clipping and unscaling act before the step, not between the step and the next
backward. The hooks measure at the first backward that reaches the parameter and come off at
the end of that step, so the cost is one strided sample and a norm once per probe interval,
on the device, no sync.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

logger = logging.getLogger(__name__)

SAMPLE_ELEMENTS = 1024
RESET_TOLERANCE = 1e-3  # a gap above this: the gradient held more than the fresh backward's


def reset_parameter(params: list[Any], in_optimizer: set[int]) -> Optional[Any]:
    """The parameter to watch: the smallest weight matrix that trains under this optimizer
    (a matrix rather than a bias: a bias feeding a normalisation layer has a gradient of ~0,
    and a gap against ~0 says nothing)."""
    candidates = [
        p
        for p in params
        if p.requires_grad and id(p) in in_optimizer and not hasattr(p, "to_local")
    ]
    matrices = [p for p in candidates if p.ndim >= 2] or candidates
    return min(matrices, key=lambda p: p.numel(), default=None)


def _sample(tensor: Any) -> Any:
    flat = tensor.detach().reshape(-1)
    return flat[:: max(1, -(-flat.numel() // SAMPLE_ELEMENTS))].float()


class GradientResetCheck:
    """One armed check at a time; `take()` hands over the last measured gap (a device
    scalar, or None while none was measured since the last take).

    The hooks never remove themselves: torch is iterating the parameter's hooks when they
    run. Once the check is measured (or has failed) they do nothing, and `settle()` at the
    step's end (or `arm()` / `take()` in the optimizer's post-hook) takes them off."""

    def __init__(self, param: Any) -> None:
        self._param = param
        self._handles: list[Any] = []
        self._waiting = False  # armed and not measured yet
        self._fresh: Any = None
        self._gap: Any = None

    def arm(self) -> None:
        """Called after a sampled optimizer step (its post-hook)."""
        if self._waiting:
            return  # no backward has reached the parameter since the last arm
        self.disarm()
        param = self._param
        if param is None or not hasattr(param, "register_post_accumulate_grad_hook"):
            return  # stopped, or torch < 2.1
        self._fresh = None
        self._waiting = True
        self._handles = [
            param.register_hook(self._on_fresh),
            param.register_post_accumulate_grad_hook(self._on_accumulated),
        ]

    def _on_fresh(self, grad: Any) -> None:
        if not self._waiting or self._fresh is not None:
            return
        try:
            self._fresh = _sample(grad).clone()
        except Exception:
            self._fail()

    def _on_accumulated(self, param: Any) -> None:
        if not self._waiting:
            return
        self._waiting = False
        fresh, self._fresh = self._fresh, None
        if fresh is None or param.grad is None:
            return
        try:
            import torch

            accumulated = _sample(param.grad)
            if accumulated.shape != fresh.shape:
                return
            scale = torch.linalg.vector_norm(fresh).clamp_min(1e-30)
            self._gap = torch.linalg.vector_norm(accumulated - fresh) / scale
        except Exception:
            self._fail()

    def _fail(self) -> None:
        """A gradient this check cannot sample (sparse, say): these hooks run inside the
        backward, so they stop for good rather than raise into it."""
        logger.warning(
            "Tracer's gradient-reset check cannot read this gradient and stops.", exc_info=True
        )
        self._waiting = False
        self._param = None

    def take(self) -> Any:
        """The last gap (a device scalar), or None when none was measured since the last
        take."""
        if not self._waiting:
            self.disarm()  # measured: its hooks are done
        gap, self._gap = self._gap, None
        return gap

    def settle(self) -> None:
        """The step ended: hooks that have measured (or failed) come off."""
        if self._handles and not self._waiting:
            self.disarm()

    def disarm(self) -> None:
        """Take the hooks off (outside the backward: after a step, or as the run ends)."""
        self._waiting = False
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
