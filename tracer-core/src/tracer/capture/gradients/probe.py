"""What an optimizer step changed, sampled every `update_check_interval` optimizer steps: the
signals of silent training bugs (README "What Tracer checks for silent bugs").

At a sampled step, the optimizer's step pre-hook (`ModelWatch`) calls `before_step` and its
post-hook `after_step`; a forward pre-hook on the watched model calls `on_forward`. Measured:
- the update size per layer, ||delta w|| / ||w||, on a strided sample of at most
  `SAMPLE_ELEMENTS` values of each parameter (one `cat` before the step, one after, a few
  kernels: no copy of the weights, no host sync);
- which parameters have a gradient but sit in no param group of the optimizer, and each
  group's lr, read from the optimizer's dicts (host values, no device read);
- the model's `training` flag while the optimizer steps (only reported when the model holds
  a module whose behaviour depends on it: dropout with p > 0, batch normalisation);
- a fingerprint of the batch (a weighted sum of a strided sample of the forward's first tensor
  input) and its rows, to see one batch repeated; when it repeats, the data loaders alive in
  the process (`data_loaders.py`) say whether more than one batch was there to be had;
- whether the gradients were reset before the next backward (`resets.py`).
Every forward with gradients disabled (not only sampled ones) goes to the evaluation checks
(`evaluation.py`): an evaluation in train() mode, a functional dropout left on in eval().

The samples go to the host in batches (`copy_to_host`, like the gradient ring) and are turned
on the writer thread into the series `optimizer/update_ratio_median` and `optimizer/lr/<group>`, and
into the event "optimizer_update" at a sample where something is off; each such event carries
the streaks (in samples) of what it names, computed here in sample order, so that a detector
replaying stored events offline reports the same as online. Sharded parameters (FSDP) are
not probed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.data_loaders import multi_batch_loaders
from tracer.capture.gradients.evaluation import EvaluationChecks
from tracer.capture.gradients.model_survey import mode_sensitive_modules, normalisation_weights
from tracer.capture.gradients.resets import RESET_TOLERANCE, GradientResetCheck, reset_parameter
from tracer.capture.transfer import HostCopy, copy_to_host
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)

SAMPLE_ELEMENTS = 1024  # values of each parameter whose change is measured
FINGERPRINT_ELEMENTS = 512
PENDING_SAMPLES = 8  # samples sent to the writer together


@dataclass
class _Sample:
    step: int
    # device: [fingerprint (NaN if none), reset gap (NaN if none), ratio per layer, moved per
    # layer]
    row: Any
    lrs: list[Any]
    training: bool
    with_grad: list[bool]
    in_optimizer: list[bool]
    norm_decay: float  # the largest weight decay a normalisation layer's parameter gets
    batch_rows: int  # the fingerprinted input's first dimension (0: none)
    # device, per layer: 1 if its weights changed since the last sample's (by any optimizer),
    # 0 if not, NaN on the first sample
    moved: Any = None


class StepProbe:
    """The silent-bug probe of one watched model and its optimizer."""

    def __init__(
        self,
        run: RunHandle,
        model: Any,
        optimizer: Any,
        prefix: str,
        names: list[str],
        params: list[Any],
    ) -> None:
        self._run = run
        self._model = model
        self._optimizer = optimizer
        self._names = names
        self._params = params
        self._prefix = prefix
        self.interval = run.config.update_check_interval
        self._sensitive = bool(mode_sensitive_modules(model))
        self.evaluation = EvaluationChecks(run, model, self._sensitive, lambda: self._steps)
        groups = optimizer.param_groups
        watched = reset_parameter(params, {id(p) for group in groups for p in group["params"]})
        self.resets = GradientResetCheck(watched) if watched is not None else None
        self._norms = normalisation_weights(model)
        self._norm_decay_sent = 0.0
        self._steps = 0  # optimizer steps seen
        self._sampling = False
        self._before: Any = None
        self._previous: Any = None  # the last sample's weights before its step
        self._fingerprint: Any = None
        self._batch_rows = 0
        self._pending: list[_Sample] = []
        self._open: Optional[_Sample] = None
        self._segments: Any = None
        self._nans: dict[int, Any] = {}
        self._weights: Any = None
        # writer-thread state: streaks in samples
        self._unchanged: dict[str, int] = {}
        self._outside = 0
        self._eval_streak = 0
        self._repeat_streak = 0
        self._last_fingerprint: Optional[float] = None
        self._loaders: Optional[list[dict[str, int]]] = None  # looked up once per repeat streak
        self._not_reset_streak = 0

    # -- training thread --------------------------------------------------------------------
    def _samples_of(self) -> list[Any]:
        views = []
        for param in self._params:
            flat = param.detach().reshape(-1)
            stride = max(1, -(-flat.numel() // SAMPLE_ELEMENTS))
            views.append(flat[::stride])
        return views

    def on_forward(self, args: Any, kwargs: Any) -> None:
        """The watched model's forward pre-hook."""
        import torch

        if not torch.is_grad_enabled():
            self.evaluation.on_forward()
            return
        if self._fingerprint is not None or self._steps % self.interval:
            return
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if tensor is None:
            tensor = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if tensor is None or tensor.numel() == 0:
            return
        flat = tensor.detach().reshape(-1)
        values = flat[:: max(1, -(-flat.numel() // FINGERPRINT_ELEMENTS))].to(torch.float32)
        weights = self._weights
        if weights is None or weights.device != values.device:
            weights = torch.linspace(1.0, 2.0, FINGERPRINT_ELEMENTS, device=values.device)
            self._weights = weights
        self._fingerprint = torch.dot(values, weights[: values.numel()])
        self._batch_rows = int(tensor.shape[0]) if tensor.ndim else 1

    def before_step(self) -> None:
        """The optimizer's step pre-hook, after the gradient capture."""
        self._sampling = self._steps % self.interval == 0
        self._steps += 1
        if not self._sampling:
            self._fingerprint = None
            return
        import torch

        now = self._before = torch.cat(self._samples_of())
        groups = self._optimizer.param_groups
        in_optimizer = {id(p) for group in groups for p in group["params"]}
        with_grad = [p.grad is not None for p in self._params]
        inside = [id(p) in in_optimizer for p in self._params]
        # Parameters outside this optimizer that still change were trained by another one
        # (a GAN's second optimizer), not left out: compare with the last sample's weights.
        # Only worked out when some parameter with a gradient is outside: most runs have none.
        moved = self._unknown(now.device, len(self._params))
        previous, self._previous = self._previous, now
        outside = any(g and not i for g, i in zip(with_grad, inside, strict=True))
        if outside and previous is not None and previous.shape == now.shape:
            change = torch.zeros(len(self._params), dtype=torch.float32, device=now.device)
            change.index_add_(0, self._segment_ids(now.device), (now - previous).float().square())
            moved = (change > 0).float()
        decays = [
            float(group.get("weight_decay", 0.0) or 0.0)
            for group in groups
            if any(id(p) in self._norms for p in group["params"])
        ]
        lrs = [group.get("lr", math.nan) for group in self._optimizer.param_groups]
        self._open = _Sample(
            step=-1,
            row=None,
            lrs=[lr.detach().clone() if isinstance(lr, torch.Tensor) else lr for lr in lrs],
            training=bool(self._model.training),
            with_grad=with_grad,
            in_optimizer=inside,
            norm_decay=max(decays, default=0.0),
            batch_rows=self._batch_rows,
            moved=moved,
        )

    def after_step(self) -> None:
        """The optimizer's step post-hook: the update sizes of a sampled step."""
        if not self._sampling or self._open is None:
            return
        import torch

        self._sampling = False
        after = torch.cat(self._samples_of()).float()
        squares = torch.stack([after - self._before.float(), after]).square_()
        sums = torch.zeros((2, len(self._params)), dtype=torch.float32, device=after.device)
        sums.index_add_(1, self._segment_ids(after.device), squares).sqrt_()
        ratios = sums[0] / sums[1].clamp_min(1e-30)
        fingerprint = self._fingerprint
        if fingerprint is None:
            fingerprint = self._unknown(after.device, 1)
        gap = None
        if self.resets is not None:
            gap = self.resets.take()
            self.resets.arm()  # measured at the next backward, read at the next sample
        if gap is None:
            gap = self._unknown(after.device, 1)
        parts = [fingerprint.reshape(1), gap.reshape(1), ratios, self._open.moved]
        self._open.row = torch.cat([part.to(ratios.dtype) for part in parts])
        self._before = None
        self._fingerprint = None
        self._batch_rows = 0

    def _unknown(self, device: Any, size: int) -> Any:
        """A vector of `size` NaN on `device` ("not measured"), made once per size."""
        cached = self._nans.get(size)
        if cached is None or cached.device != device:
            import torch

            cached = self._nans[size] = torch.full((size,), math.nan, device=device)
        return cached

    def _segment_ids(self, device: Any) -> Any:
        """For each sampled value, the index of its parameter (for per-parameter sums)."""
        if self._segments is None or self._segments.device != device:
            import torch

            sizes = [v.numel() for v in self._samples_of()]
            self._segments = torch.repeat_interleave(
                torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
            )
        return self._segments

    def on_step_end(self, step: int) -> None:
        if self.resets is not None:
            self.resets.settle()
        sample, self._open = self._open, None
        if sample is None or sample.row is None:
            return
        sample.step = step
        self._pending.append(sample)
        if len(self._pending) >= PENDING_SAMPLES:
            self.drain()

    def close(self) -> None:
        """The run ends or the probe failed: take its hooks off the parameter and end a
        dropout watch left open."""
        if self.resets is not None:
            self.resets.disarm()
        self.evaluation.after_forward()

    def drain(self) -> None:
        if not self._pending:
            return
        import torch

        samples, self._pending = self._pending, []
        copy = copy_to_host(torch.stack([s.row for s in samples]))
        self._run.submit_background(lambda: self._collected(copy, samples))

    # -- writer thread ----------------------------------------------------------------------
    def _collected(self, copy: HostCopy, samples: list[_Sample]) -> Collected:
        table = copy.get().tolist()
        rows: list[tuple[int, dict[str, float]]] = []
        events: list[EventWrite] = []
        for sample, values in zip(samples, table, strict=True):
            count = len(self._params)
            fingerprint, gap = values[0], values[1]
            ratios, moved = values[2 : 2 + count], values[2 + count :]
            lrs = [float(lr) for lr in sample.lrs]
            moving = [
                r
                for r, g, o in zip(ratios, sample.with_grad, sample.in_optimizer, strict=True)
                if g and o
            ]
            prefix = self._prefix
            point = {f"{prefix}optimizer/lr/{i}": lr for i, lr in enumerate(lrs)}
            if moving:
                point[prefix + "optimizer/update_ratio_median"] = sorted(moving)[len(moving) // 2]
            rows.append((sample.step, point))
            data = self._judge(sample, ratios, moved, fingerprint, gap, lrs)
            if data is not None:
                events.append({"step": sample.step, "kind": "optimizer_update", "data": data})
            if sample.norm_decay != self._norm_decay_sent:  # sent when it changes
                self._norm_decay_sent = sample.norm_decay
                decay: dict[str, object] = {
                    "model": type(self._model).__name__,
                    "weight_decay": sample.norm_decay,
                    "optimizer": type(self._optimizer).__name__,
                }
                events.append({"step": sample.step, "kind": "norm_weight_decay", "data": decay})
        return Collected(rows, events)

    def _judge(
        self,
        sample: _Sample,
        ratios: list[float],
        moved: list[float],
        fingerprint: float,
        gap: float,
        lrs: list[float],
    ) -> Optional[dict[str, object]]:
        """Update the streaks with one sample; the event's data when something is off. A
        parameter outside the optimizer counts once it is known not to have moved since the
        last sample (from the second sample on): one that moved has another optimizer."""
        unchanged: dict[str, int] = {}
        outside: list[str] = []
        for name, ratio, grad, inside, changed in zip(
            self._names, ratios, sample.with_grad, sample.in_optimizer, moved, strict=True
        ):
            if grad and not inside:
                if changed == 0.0:
                    outside.append(name)
            elif grad and ratio == 0.0 and not name.endswith("bias"):
                # a bias feeding a normalisation layer has a gradient of ~0 by construction
                unchanged[name] = self._unchanged.get(name, 0) + 1
        self._unchanged = unchanged
        self._outside = self._outside + 1 if outside else 0
        self._eval_streak = self._eval_streak + 1 if not sample.training and self._sensitive else 0
        repeated = fingerprint == fingerprint and fingerprint == self._last_fingerprint
        self._repeat_streak = self._repeat_streak + 1 if repeated else 0
        self._last_fingerprint = fingerprint if fingerprint == fingerprint else None
        if not self._repeat_streak:
            self._loaders = None
        elif self._loaders is None:  # is there more than this one batch? (once per streak)
            self._loaders = multi_batch_loaders()
        if gap == gap:  # NaN: not measured (no backward reached the parameter)
            self._not_reset_streak = self._not_reset_streak + 1 if gap > RESET_TOLERANCE else 0
        if not (
            unchanged
            or outside
            or self._eval_streak
            or self._repeat_streak
            or self._not_reset_streak
        ):
            return None
        with_grad = sum(sample.with_grad)
        return {
            "model": type(self._model).__name__,
            "unchanged": unchanged,
            "outside_optimizer": outside,
            "outside_streak": self._outside,
            "with_grad": with_grad,
            "in_optimizer": sum(  # the layers judged unchanged or not: biases aside
                g and o and not name.endswith("bias")
                for name, g, o in zip(
                    self._names, sample.with_grad, sample.in_optimizer, strict=True
                )
            ),
            "lrs": lrs,
            "eval_streak": self._eval_streak,
            "repeated_batch_streak": self._repeat_streak,
            "batch_rows": sample.batch_rows,
            "loaders": self._loaders or [],
            "not_reset_streak": self._not_reset_streak,
            "reset_gap": gap if math.isfinite(gap) else None,
            "interval": self.interval,
        }
