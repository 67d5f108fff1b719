"""A watched model's gradients: seen once per optimizer step, summarised on the device, read
back in batches.

Capture point, recorded as the run event "gradient_capture":
- "optimizer_step": `watch(model, optimizer=...)` registers the optimizer's step pre-hook,
  so gradients are seen after accumulation, after GradScaler's unscale, after DDP's
  all-reduce and right before they are applied;
- "backward_end": without an optimizer, the end of each backward pass (the autograd engine's
  final callback); the last backward before `tracer.step()` wins, so accumulation is
  captured once, but values are still scaled when a GradScaler is used.

A tracer step in which a backward ran but the known optimizer did not step (GradScaler
skipped it after an fp16 overflow) is recorded as `optimizer/skipped_step` = 1 and the event
"optimizer_step_skipped", and is not captured. A step in which the optimizer stepped but no
watched parameter had a gradient (parameters frozen by mistake, a loss cut from the graph,
`zero_grad()` called before `step()`) is recorded as the event "gradients_missing": the
optimizer changed nothing. This assumes the usual convention: one `tracer.step()` per
optimizer step. With `on_nonfinite="skip"`, a step whose gradients were non-finite is captured
and then skipped (`skipping.py`): it is recorded as `optimizer/skipped_step` = 1 and the
event "optimizer_step_skipped" with `"reason": "nonfinite_gradients"`, its norms stored too.

Per step, `kernels.step_summary` writes one row into a device ring buffer (its norms from
the one-read Triton kernel of `fused.py` when `fused_gradient_kernel` is set); every
`RING_CAPACITY` captured steps, and at checkpoints and finish, the filled rows are copied to
the host asynchronously and turned into the series `grad/global_norm`, `grad/max_abs` and
`grad/nonfinite_layers`, plus an event "nonfinite_gradients" naming the layers (in
parameter order, the first is the one to look at) at each step where some were non-finite.

`gradient_layers` selects parameters by their `named_parameters()` name: a pattern with
`*`, `?` or `[` is an fnmatch glob over the full name ("*.attn.*"); a plain pattern matches
that name or any name under it as a module prefix ("encoder.layer.0").

With an optimizer known (unwrapped to the torch one, `optimizers.py`), the silent-bug probe
(`probe.py`) hooks its steps, also under an adapter's capture point.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.gradients import kernels
from tracer.capture.gradients.fused import FusedSummary
from tracer.capture.gradients.probe import StepProbe
from tracer.capture.gradients.readback import NormReadback
from tracer.capture.transfer import HostCopy, copy_to_host
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)

RING_CAPACITY = 64
POINT_OPTIMIZER = "optimizer_step"
POINT_BACKWARD = "backward_end"


def select_parameters(
    named: Sequence[tuple[str, Any]], patterns: Optional[Sequence[str]]
) -> list[tuple[str, Any]]:
    """Trainable parameters whose names match `patterns` (all of them when None)."""

    def wanted(name: str) -> bool:
        if patterns is None:
            return True
        for pattern in patterns:
            if any(char in pattern for char in "*?["):
                if fnmatch.fnmatchcase(name, pattern):
                    return True
            elif name == pattern or name.startswith(pattern.rstrip(".") + "."):
                return True
        return False

    return [(name, p) for name, p in named if p.requires_grad and wanted(name)]


class ModelWatch:
    """Capture for one watched model (and its optimizer, when known)."""

    def __init__(
        self,
        run: RunHandle,
        model: Any,
        optimizer: Any,
        prefix: str,
        capture_point: Optional[str] = None,
    ) -> None:
        import torch

        selected = select_parameters(list(model.named_parameters()), run.config.gradient_layers)
        self.names = [prefix + name for name, _ in selected]
        self.params = [param for _, param in selected]
        self.prefix = prefix
        self.model = model
        self.optimizer = optimizer
        self.manual = capture_point is not None
        self.point = capture_point or (POINT_OPTIMIZER if optimizer is not None else POINT_BACKWARD)
        self._run = run
        self._ring: Any = None
        self._ring_steps: list[int] = []
        self._captured = False
        self._backward_seen = False
        self._skipped = False
        self._missing = False  # the optimizer stepped with no gradient on any parameter
        self._nonfinite_skip = 0  # this step was skipped for non-finite gradients: nth in a row
        self._end_queued = False
        self._index_cache: dict[tuple[bool, ...], Any] = {}
        self.readback = NormReadback(self.names, prefix)  # the writer thread's side
        self._unread: set[int] = set()  # drained steps whose rows the writer has not read
        self._failed = False  # capture failed in a hook: its hooks come off at the step's end
        self.drain_requested = False  # set by the writer thread: an anomaly wants a step here
        self._full: Any = None  # full statistics taken at a capture of a checkpoint step
        # Called with the global norm (a device scalar) right after each capture.
        self.on_capture: Optional[Callable[[Any], None]] = None
        self._shards = kernels.shard_group(model, self.params)
        # The opt-in one-read Triton kernel for the per-step norms (kernels.step_summary).
        self._fused = FusedSummary() if run.config.fused_gradient_kernel else None
        self._handles: list[Any] = []
        self.probe: Optional[StepProbe] = None  # the silent-bug probe, with an optimizer
        if not self.params:
            logger.warning(
                "tracer.watch: no trainable parameter of %s matches"
                " gradient_layers=%r; nothing is captured.",
                type(model).__name__,
                run.config.gradient_layers,
            )
            return
        probed = optimizer is not None and bool(run.config.update_check_interval)
        if self.manual:  # the adapter calls capture() at its framework's event
            if probed and self._shards is None:
                self._attach_probe(model, optimizer)
            return
        self._handles.append(
            torch.autograd.graph.register_multi_grad_hook(
                self.params, self._on_first_grad, mode="any"
            )
        )
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._on_optimizer_step))
            if probed and self._shards is None:
                self._attach_probe(model, optimizer)

    def _attach_probe(self, model: Any, optimizer: Any) -> None:
        """The silent-bug probe (`probe.py`): its pre-hook runs after the capture's.

        Under an adapter (`manual`) the probe's step begins at `capture()`, the framework's
        event, not in the optimizer's pre-hook: Lightning runs forward and backward inside
        `optimizer.step(closure)`, so at the pre-hook the gradients are the last step's (none
        at all after validation's zero_grad). Adapters move the run to step k before they
        capture (inside step k: in the closure, or in their own pre-hooks, which may come
        before or after the probe's post-hook), so the sample opens in step k and closes
        with it."""
        probe = StepProbe(self._run, model, optimizer, self.prefix, self.names, self.params)
        self.probe = probe

        def before(optimizer: Any, args: Any, kwargs: Any) -> None:
            self._guarded(probe.before_step)

        def after(optimizer: Any, args: Any, kwargs: Any) -> None:
            self._guarded(probe.after_step)

        def forward(module: Any, args: Any, kwargs: Any) -> None:
            self._guarded(lambda: probe.on_forward(args, kwargs))

        if not self.manual:
            self._handles.append(optimizer.register_step_pre_hook(before))
        self._handles.append(optimizer.register_step_post_hook(after))
        self._handles.append(model.register_forward_pre_hook(forward, with_kwargs=True))

    def _guarded(self, call: Callable[[], None]) -> None:
        """A probe call from a torch hook: a failure switches the probe off, never training."""
        if self.probe is None or not self._run.active:
            return
        try:
            call()
        except Exception:
            logger.exception(
                "Tracer's update probe of %s failed and stops; training goes on.",
                type(self.model).__name__,
            )
            probe, self.probe = self.probe, None
            if probe is not None:
                probe.close()

    # -- hooks (training thread, inside backward / optimizer.step) -----------------------------
    def _on_first_grad(self, grad: Any) -> None:
        if not self._end_queued and self._run.active:  # not in a forked child
            import torch

            self._end_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._on_backward_end)

    def _on_backward_end(self) -> None:
        self._end_queued = False
        self._backward_seen = True
        if self.optimizer is None:
            self._capture_guarded()

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._capture_guarded()

    def capture(self) -> None:
        """Capture now: the framework's event says the gradients are final for this step.
        The probe's step begins here too (see `_attach_probe`)."""
        if self.params:
            self._capture_guarded()
        if self.probe is not None:
            self._guarded(self.probe.before_step)

    def _capture_guarded(self) -> None:
        """Called from torch's hooks: a failure must never reach the training loop. Capture
        stops for this model after the first one (it would fail the same way each step)."""
        if not self._run.active or not self.params:
            return  # a forked child (a training worker of its own), or capture stopped
        try:
            self._capture()
        except Exception:
            logger.exception(
                "Tracer's gradient capture of %s failed and stops; training goes on.",
                type(self.model).__name__,
            )
            self.params = []  # every hook does nothing from now on
            self._captured = False
            probe, self.probe = self.probe, None
            if probe is not None:
                probe.close()  # its own hooks sit on a parameter and the forward: none runs now
            # Taken off at the step's end: torch is iterating these hooks right now, and
            # removing one from inside another is an error that would reach the training loop.
            self._failed = True

    def skipped(self) -> None:
        """The framework says the optimizer skipped this step: record it, drop its capture."""
        self._captured = False
        self._skipped = True

    def nonfinite_skipped(self, consecutive: int) -> None:
        """The skip decision (`skipping.py`) cleared this step's gradients: the `consecutive`-th
        skipped step in a row. Recorded when the step closes."""
        self._nonfinite_skip = consecutive

    def captured_extremes(self) -> Any:
        """What says whether the gradients captured in the step still open hold a NaN or an
        Inf (a device vector, non-finite exactly then): their max |g|, and for sharded
        gradients also the global norm (the max's MAX all-reduce may drop a NaN, the norm's
        sum keeps it). None when nothing was captured in the step."""
        if not self._captured:
            return None
        row = self._ring[len(self._ring_steps)]
        return row[: kernels.SUMMARY_HEAD] if self._shards is not None else row[1:2]

    def _capture(self) -> None:
        grads = [param.grad for param in self.params]
        if self._shards is not None:  # DTensor gradients: this rank's shard of each
            grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        present = tuple(grad is not None for grad in grads)
        if not any(present):
            self._missing = True
            return
        index = None
        if not all(present):
            index = self._index_cache.get(present)
            if index is None:
                import torch

                device = next(g for g in grads if g is not None).device
                index = torch.tensor([i for i, p in enumerate(present) if p], device=device)
                self._index_cache[present] = index
            grads = [grad for grad in grads if grad is not None]
        if self._run.checkpoint_due:  # the gradients may be gone (zero_grad) by then
            self._full = kernels.full_stats([param.grad for param in self.params])
        row = kernels.step_summary(grads, index, len(self.params), self._shards, self._fused)
        if self.on_capture is not None:
            self.on_capture(row[0])
        if self._ring is None:
            import torch

            self._ring = torch.empty(
                (RING_CAPACITY, row.numel()), dtype=row.dtype, device=row.device
            )
        self._ring[len(self._ring_steps)].copy_(row)  # a repeated capture overwrites
        self._captured = True

    # -- run calls (training thread) ------------------------------------------------------
    def on_step_end(self, step: int) -> None:
        if self._failed:
            self._failed = False
            self.close()
            return
        captured = self._captured
        if captured:  # its row is already in the ring, at index len(_ring_steps)
            self._captured = False
            self._ring_steps.append(step)
        if self.probe is not None:
            self.probe.on_step_end(step)
        if self.drain_requested or len(self._ring_steps) == RING_CAPACITY:
            self.drain_requested = False
            self.drain()
        if self._nonfinite_skip:
            reason = {"reason": "nonfinite_gradients", "consecutive": self._nonfinite_skip}
            self._record_skip(step, reason)
        elif not captured and self._missing:  # the optimizer stepped, on no gradient
            missing: EventWrite = {
                "step": step,
                "kind": "gradients_missing",
                "data": {"model": type(self.model).__name__},
            }
            self._run.submit_background(lambda: Collected([], [missing]))
        elif not captured and (
            self._skipped or (self._backward_seen and self.optimizer is not None)
        ):
            self._record_skip(step, {})
        self._backward_seen = False
        self._skipped = False
        self._missing = False
        self._nonfinite_skip = 0

    def _record_skip(self, step: int, details: dict[str, object]) -> None:
        """`optimizer/skipped_step` = 1 and the event "optimizer_step_skipped" at `step`."""
        data: dict[str, object] = {"model": type(self.model).__name__, **details}
        event: EventWrite = {"step": step, "kind": "optimizer_step_skipped", "data": data}
        name = self.prefix + "optimizer/skipped_step"
        self._run.submit_background(lambda: Collected([(step, {name: 1.0})], [event]))

    def drain(self) -> None:
        """Send the filled ring rows to the writer (one async copy), and the probe's samples."""
        if self.probe is not None:
            self.probe.drain()
        if not self._ring_steps:
            return
        copy = copy_to_host(self._ring[: len(self._ring_steps)])
        steps = self._ring_steps
        self._unread.update(steps)  # before the ring lets go of them: holds() never misses
        self._ring_steps = []
        self._run.submit_background(lambda: self._read_back(copy, steps))

    def _read_back(self, copy: HostCopy, steps: list[int]) -> Collected:
        """Writer thread: a drained block's rows, after which its steps are no longer held."""
        try:
            return self.readback.rows(copy, steps)
        finally:
            self._unread.difference_update(steps)

    def checkpoint(self) -> Any:
        """Per-layer statistics for a checkpoint, resolved on the writer thread.

        Full statistics come from the capture of this step when it was known to be a
        checkpoint step, else from the gradients present now. When neither exists (a
        checkpoint forced after `zero_grad`, such as the one at finish), each layer gets the
        norm of its last capture and its largest norm since the previous checkpoint.
        """
        self.drain()
        full, self._full = self._full, None
        if full is None and any(param.grad is not None for param in self.params):
            full = kernels.full_stats([param.grad for param in self.params])
        copy = copy_to_host(full) if full is not None else None
        return lambda: self.readback.stats(copy)

    def close(self) -> None:
        self.drain()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.probe is not None:
            self.probe.close()

    # -- writer thread ----------------------------------------------------------------------
    @property
    def captured_this_step(self) -> bool:
        return self._captured

    def holds(self, step: int) -> bool:
        """Writer thread: whether `step` was captured and its norms have not been read back
        yet (in the device ring, or drained and on their way to the writer)."""
        return step in self._ring_steps or step in self._unread

    def anomaly_stats(self, step: int) -> dict[str, dict[str, float]]:
        """Writer thread: per-layer norms at `step`, if it is among the last drained steps."""
        return self.readback.anomaly_stats(step)
