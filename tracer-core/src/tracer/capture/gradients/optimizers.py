"""The torch optimizer under a framework's wrapper: the one whose `step()` really updates the
weights and whose `param_groups` are real, for the hooks that must fire once per optimizer
step (the gradient capture, the silent-bug probe).

Frameworks hand their users and callbacks a wrapper: Accelerate's `AcceleratedOptimizer`
(and with it the HF Trainer's optimizer) and Lightning Fabric's `_FabricOptimizer` keep the
torch optimizer in `.optimizer`, Lightning's `LightningOptimizer` in `._optimizer`. The
wrapper's own `step()` is not the update: `AcceleratedOptimizer.step` calls the inner one
only when gradients are synchronised (not at the micro-steps of gradient accumulation), a
GradScaler calls it only when no gradient overflowed, and step hooks registered on a wrapper
that never ran `Optimizer.__init__` never fire. Duck-typed, so no framework is imported here.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

INNER_ATTRIBUTES = ("_optimizer", "optimizer")  # LightningOptimizer; Accelerate and Fabric
MAX_WRAPPERS = 8  # wrappers of wrappers: HF's AcceleratedOptimizer around a user's wrapper


def is_torch_optimizer(candidate: Any) -> bool:
    """Whether `candidate` has what the probe and the capture use: param groups and torch's
    step pre- and post-hooks."""
    return (
        candidate is not None
        and hasattr(candidate, "param_groups")
        and callable(getattr(candidate, "register_step_pre_hook", None))
        and callable(getattr(candidate, "register_step_post_hook", None))
    )


def _inner(wrapper: Any) -> Any:
    for name in INNER_ATTRIBUTES:
        try:
            inner = getattr(wrapper, name, None)
        except Exception:  # a property of a framework's wrapper that cannot answer now
            continue
        if inner is not wrapper and is_torch_optimizer(inner):
            return inner
    return None


def torch_optimizer(optimizer: Any) -> Any:
    """The innermost torch optimizer of `optimizer` (itself when it wraps none; None stays
    None)."""
    current = optimizer
    for _ in range(MAX_WRAPPERS):
        inner = _inner(current)
        if inner is None:
            break
        current = inner
    return current


def optimizer_to_hook(optimizer: Any, model: Any, *, adapter: bool) -> Any:
    """What `watch(model, optimizer)` hooks: the torch optimizer inside `optimizer`. One that
    cannot be hooked is a `TypeError` for a user's `watch`; under an adapter (a DeepSpeed
    placeholder, say) it is None: the model is watched without the silent-bug probe rather
    than refused."""
    unwrapped = torch_optimizer(optimizer)
    if is_torch_optimizer(unwrapped):
        return unwrapped
    if not adapter:
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    logger.info(
        "Tracer cannot hook %s: %s is watched without the silent-bug probe.",
        type(optimizer).__name__,
        type(model).__name__,
    )
    return None
