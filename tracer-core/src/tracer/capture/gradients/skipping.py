"""Skipping an optimizer step whose gradients are non-finite (`on_nonfinite="skip"`), taken
on every rank together.

Where. Right before the optimizer applies the gradients, once they are final: for plain
loops, an optimizer step pre-hook that `tracer.watch(model, optimizer=...)` registers after
the watch's own capture hook (re-registered at each later watch of the same optimizer, so it
always runs after every capture of that step); adapters call `run.skip_nonfinite_step(optimizer)`
at their framework's pre-optimizer event, right after `capture_gradients()`. Both end in
`NonfiniteSkip.decide`, the one implementation.

How, at each optimizer step:
1. one device flag, "a NaN or an Inf in any gradient": from what the watches of this
   optimizer captured this step (the max |g| of their row, already computed for the stored
   series: non-finite exactly when a value is), plus the max |g| of any gradient of the
   optimizer that no capture summarised (a parameter outside `gradient_layers`, a capture
   that stopped after a failure);
2. in a distributed job (torch.distributed initialised, world size > 1), MAX all-reduced over
   the default process group, so every rank gets the same answer even when only one rank's
   gradients went bad and nothing averages them;
3. read once on the host (`.item()`): one sync per optimizer step, the price of this opt-in
   mode (the default, "record", reads nothing back on the training thread);
4. non-finite: every parameter of the optimizer gets `.grad = None`. torch's optimizers pass
   over parameters without a gradient (no update, no weight decay, no momentum or Adam
   moment touched, no step count advanced), so `optimizer.step()` then changes nothing. The
   step is recorded as `optimizer/skipped_step` = 1 and the event "optimizer_step_skipped"
   (with `"reason": "nonfinite_gradients"`); its captured gradient norms are stored too (NaN
   or Inf: why it was skipped);
5. after `max_consecutive_skips` skipped steps in a row, the run is told to stop
   (`RunHandle.stop_training`): every rank took the same decisions, so every rank stops at the
   same step, and a finite step resets the count.

Sharded gradients (FSDP) also count a global norm beyond float32's range (about 1.8e19) as
non-finite: their max |g| comes through a MAX all-reduce, which may drop a NaN, so their
global norm (a sum, which keeps it) is checked too.

GradScaler. A step the scaler skips (it found an inf after unscaling) never calls the
optimizer, so no pre-hook runs and no decision is taken: it is recorded as a scaler skip, as
without this mode, and neither adds to nor resets the count. Every rank must then call the
optimizer at the same steps, which holds when their gradients are synchronised (DDP, FSDP's
sharded scaler). Clipping does not help: `clip_grad_norm_` of a NaN gradient leaves NaN.

Every rank must take part (`init` and `watch` on all of them, as the adapters do): a rank
without the run leaves the others waiting in the flag's all-reduce. Tracing on rank 0 only
suits the default mode, not this one.

A failure of the decision itself (a collective that fails) is raised into the training loop:
going on would step on gradients nobody checked, or on one rank alone.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.gradients import kernels
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.capture.gradients.watch import ModelWatch
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)

REASON = "nonfinite_gradients"


@dataclass(frozen=True)
class _Plan:
    """What the decisions of one optimizer look at, kept while its parameters and the run's
    watches stay the same."""

    optimizer: Callable[[], Any]  # a weak reference: an id can be reused
    shape: tuple[int, int]  # (watches, parameters) when made: either changing renews it
    params: list[Any]  # every parameter of the optimizer, once each
    watches: list[tuple[ModelWatch, list[Any]]]  # the watches sharing its parameters
    others: list[Any]  # its parameters that no watch captures


class NonfiniteSkip:
    """The skip decisions of one run in this process (see the module docstring)."""

    def __init__(self, run: RunHandle, watches: Sequence[ModelWatch]) -> None:
        self._run = run
        self._watches = watches  # the collector's list: it grows with later watch() calls
        self.max_consecutive = run.config.max_consecutive_skips
        self.consecutive = 0  # skipped steps in a row, up to the last decision
        self.skipped = 0  # steps skipped so far
        self._hooks: dict[int, Any] = {}  # id(optimizer) -> its pre-hook's handle
        self._plans: dict[int, _Plan] = {}  # by id(optimizer)
        self._stop_requested = False

    # -- plain loops: the optimizer's step pre-hook ------------------------------------------
    def guard(self, optimizer: Any) -> None:
        """Decide at every step of `optimizer`, after the capture hooks registered so far
        (registering anew moves this hook behind them)."""
        handle = self._hooks.pop(id(optimizer), None)
        if handle is not None:
            handle.remove()
        self._hooks[id(optimizer)] = optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._run.active:  # not in a forked child, not after finish
            self.decide(optimizer)

    def close(self) -> None:
        for handle in self._hooks.values():
            handle.remove()
        self._hooks = {}

    # -- the decision -------------------------------------------------------------------------
    def decide(self, optimizer: Any) -> bool:
        """Whether this step of `optimizer` is skipped; when it is, its gradients are gone."""
        plan = self._plan(optimizer)
        if not _agreed_nonfinite(self._local_flag(plan)):
            self.consecutive = 0
            return False
        for param in plan.params:
            param.grad = None
        self.skipped += 1
        self.consecutive += 1
        step = self._run.current_step
        for watch, _ in plan.watches:
            watch.nonfinite_skipped(self.consecutive)
        if not plan.watches:
            self._record(step)
        logger.warning(
            "Tracer skipped optimizer step %d: non-finite gradients (%d skipped in a row).",
            step,
            self.consecutive,
        )
        if self.consecutive >= self.max_consecutive and not self._stop_requested:
            self._stop_requested = True
            self._run.stop_training(
                {
                    "anomaly_type": REASON,
                    "step": step,
                    "message": f"{self.consecutive} optimizer steps in a row had non-finite"
                    f" gradients and were skipped (max_consecutive_skips={self.max_consecutive})",
                }
            )
        return True

    def _plan(self, optimizer: Any) -> _Plan:
        groups = optimizer.param_groups
        shape = (len(self._watches), sum(len(group["params"]) for group in groups))
        plan = self._plans.get(id(optimizer))
        if plan is not None and plan.optimizer() is optimizer and plan.shape == shape:
            return plan
        params = list({id(p): p for group in groups for p in group["params"]}.values())
        ids = {id(p) for p in params}
        watches = [
            (watch, list(watch.params))
            for watch in self._watches
            if any(id(p) in ids for p in watch.params)
        ]
        watched = {id(p) for _, watched_params in watches for p in watched_params}
        others = [p for p in params if id(p) not in watched]
        plan = _Plan(weakref.ref(optimizer), shape, params, watches, others)
        self._plans[id(optimizer)] = plan
        return plan

    def _local_flag(self, plan: _Plan) -> Any:
        """1.0 when a gradient of this rank is non-finite, else 0.0 (a device scalar); None
        when this rank has no gradient at all."""
        import torch

        parts = []
        unsummarised = list(plan.others)
        for watch, params in plan.watches:
            extremes = watch.captured_extremes()
            if extremes is not None:
                parts.append(extremes)
            else:
                unsummarised.extend(params)
        top = kernels.max_abs([p.grad for p in unsummarised if p.grad is not None])
        if top is not None:
            parts.append(top.reshape(1))
        if not parts:
            return None
        device = parts[0].device
        values = torch.cat([part.to(device) for part in parts])
        return (~torch.isfinite(values)).any().to(torch.float32)

    def _record(self, step: int) -> None:
        """A skip of an optimizer no watch shares parameters with: recorded here."""
        event: EventWrite = {
            "step": step,
            "kind": "optimizer_step_skipped",
            "data": {"reason": REASON, "consecutive": self.consecutive},
        }
        self._run.submit_background(Collected([(step, {"optimizer/skipped_step": 1.0})], [event]))


def _agreed_nonfinite(flag: Optional[Any]) -> bool:
    """The flag of every rank together (MAX over the default process group), read on the
    host; this rank's own when the job is a single process."""
    import torch

    distributed = _default_group_size() > 1
    if not distributed:
        return flag is not None and bool(flag.item())
    import torch.distributed as dist

    device = _collective_device(flag)
    if flag is None:
        flag = torch.zeros((), dtype=torch.float32, device=device)
    elif flag.device != device:
        flag = flag.to(device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _default_group_size() -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size())


def _collective_device(flag: Optional[Any]) -> Any:
    """Where the flag must be for the default group's backend: gloo takes CPU (and CUDA)
    tensors; a backend without gloo (nccl) takes the accelerator's."""
    import torch
    import torch.distributed as dist

    here = flag.device if flag is not None else torch.device("cpu")
    if here.type != "cpu" or "gloo" in str(dist.get_backend()):
        return here
    accelerator = torch.accelerator.current_accelerator()
    if accelerator is None:
        return here
    return torch.device(accelerator.type, torch.accelerator.current_device_index())
