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
  input), to see one batch repeated.
Every forward (not only sampled ones) also checks for an evaluation (gradients disabled) run
in train() mode; that costs two attribute reads.

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

from tracer.capture.transfer import HostCopy, copy_to_host
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

logger = logging.getLogger(__name__)

SAMPLE_ELEMENTS = 1024  # values of each parameter whose change is measured
FINGERPRINT_ELEMENTS = 512
PENDING_SAMPLES = 8  # samples sent to the writer together
EVAL_EVENT_GAP = 100  # optimizer steps between two "evaluation_in_train_mode" events


def mode_sensitive_modules(model: Any) -> list[str]:
    """Names of the submodules whose output depends on `training`: dropout with p > 0 and
    batch normalisation. Without any, train() / eval() changes nothing worth reporting."""
    import torch

    kinds = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, kinds) and getattr(module, "p", 1.0) > 0:
            found.append(name or type(module).__name__)
    return found


def layer_summary(model: Any) -> dict[str, object]:
    """What is trainable, for the "gradient_capture" event: weight matrices (ndim >= 2)
    trainable and frozen, and the trainable 1-D tensors (norms, biases)."""
    trainable = frozen = vectors = 0
    for _, param in model.named_parameters():
        if param.ndim >= 2:
            if param.requires_grad:
                trainable += 1
            else:
                frozen += 1
        elif param.requires_grad:
            vectors += 1
    return {
        "trainable_matrices": trainable,
        "frozen_matrices": frozen,
        "trainable_vectors": vectors,
    }


def normalisation_weights(model: Any) -> set[int]:
    """Ids of the scale and shift parameters of the model's normalisation layers."""
    import torch

    kinds: tuple[type, ...] = (
        torch.nn.modules.batchnorm._BatchNorm,
        torch.nn.LayerNorm,
        torch.nn.GroupNorm,
    )
    rms = getattr(torch.nn, "RMSNorm", None)
    if rms is not None:
        kinds = (*kinds, rms)
    return {
        id(param)
        for module in model.modules()
        if isinstance(module, kinds) or type(module).__name__.endswith(("Norm", "RMSNorm"))
        for param in module.parameters(recurse=False)
    }


def weight_scales(run: RunHandle, model: Any) -> None:
    """Send the event "weight_scale": each Linear / convolution weight's rms x sqrt(fan-in)
    (~0.6 under torch's default init, ~1 to 2 for trained transformers), for the layers
    outside [0.05, 5]. Reduced on the device now, read on the writer thread."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    names, scales = [], []
    with torch.no_grad():
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, kinds) or weight is None or weight.numel() == 0:
                continue
            if hasattr(weight, "to_local"):
                continue  # sharded: a shard's rms is not the layer's
            fan_in = weight[0].numel()
            rms = torch.linalg.vector_norm(weight.detach().float()) / math.sqrt(weight.numel())
            names.append(f"{name}.weight")
            scales.append(rms * math.sqrt(fan_in))
    if not scales:
        return
    copy = copy_to_host(torch.stack(scales))
    step = run.current_step
    kind = type(model).__name__

    def collected() -> Collected:
        values = copy.get().tolist()
        off = {n: v for n, v in zip(names, values, strict=True) if not 0.05 <= v <= 5.0}
        if not off:
            return Collected([], [])
        event: EventWrite = {
            "step": step,
            "kind": "weight_scale",
            "data": {"model": kind, "layers": off},
        }
        return Collected([], [event])

    run.submit_background(collected)


@dataclass
class _Sample:
    step: int
    row: Any  # device: [fingerprint (NaN if none), ratio per layer, moved per layer]
    lrs: list[Any]
    training: bool
    with_grad: list[bool]
    in_optimizer: list[bool]
    norm_decay: float  # the largest weight decay a normalisation layer's parameter gets
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
        self._norms = normalisation_weights(model)
        self._norm_decay_sent = 0.0
        self._steps = 0  # optimizer steps seen
        self._sampling = False
        self._before: Any = None
        self._previous: Any = None  # the last sample's weights before its step
        self._fingerprint: Any = None
        self._pending: list[_Sample] = []
        self._open: Optional[_Sample] = None
        self._segments: Any = None
        self._weights: Any = None
        self._last_eval_event = -EVAL_EVENT_GAP
        # writer-thread state: streaks in samples
        self._unchanged: dict[str, int] = {}
        self._outside = 0
        self._eval_streak = 0
        self._repeat_streak = 0
        self._last_fingerprint: Optional[float] = None

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

        model = self._model
        if not torch.is_grad_enabled():
            if (
                model.training
                and self._sensitive
                and (self._steps - self._last_eval_event >= EVAL_EVENT_GAP)
            ):
                self._last_eval_event = self._steps
                event: EventWrite = {
                    "step": self._run.current_step,
                    "kind": "evaluation_in_train_mode",
                    "data": {"model": type(model).__name__},
                }
                self._run.submit_background(lambda: Collected([], [event]))
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

    def before_step(self) -> None:
        """The optimizer's step pre-hook, after the gradient capture."""
        self._sampling = self._steps % self.interval == 0
        self._steps += 1
        if not self._sampling:
            self._fingerprint = None
            return
        import torch

        now = self._before = torch.cat(self._samples_of())
        # Parameters outside this optimizer that still change were trained by another one
        # (a GAN's second optimizer), not left out: compare with the last sample's weights.
        moved = torch.full((len(self._params),), math.nan, device=now.device)
        previous, self._previous = self._previous, now
        if previous is not None and previous.shape == now.shape:
            change = torch.zeros(len(self._params), dtype=torch.float32, device=now.device)
            change.index_add_(0, self._segment_ids(now.device), (now - previous).float().square())
            moved = (change > 0).float()
        groups = self._optimizer.param_groups
        in_optimizer = {id(p) for group in groups for p in group["params"]}
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
            with_grad=[p.grad is not None for p in self._params],
            in_optimizer=[id(p) in in_optimizer for p in self._params],
            norm_decay=max(decays, default=0.0),
            moved=moved,
        )

    def after_step(self) -> None:
        """The optimizer's step post-hook: the update sizes of a sampled step."""
        if not self._sampling or self._open is None:
            return
        import torch

        self._sampling = False
        after = torch.cat(self._samples_of())
        segments = self._segment_ids(after.device)
        sums = torch.zeros((2, len(self._params)), dtype=torch.float32, device=after.device)
        sums[0].index_add_(0, segments, (after - self._before).float().square())
        sums[1].index_add_(0, segments, after.float().square())
        ratios = sums[0].sqrt() / sums[1].sqrt().clamp_min(1e-30)
        fingerprint = self._fingerprint
        if fingerprint is None:
            fingerprint = torch.tensor(math.nan, device=after.device)
        moved = self._open.moved.to(ratios.dtype)
        self._open.row = torch.cat([fingerprint.reshape(1).to(ratios.dtype), ratios, moved])
        self._before = None
        self._fingerprint = None

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
        sample, self._open = self._open, None
        if sample is None or sample.row is None:
            return
        sample.step = step
        self._pending.append(sample)
        if len(self._pending) >= PENDING_SAMPLES:
            self.drain()

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
            fingerprint, ratios = values[0], values[1 : 1 + count]
            moved = values[1 + count :]
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
            data = self._judge(sample, ratios, moved, fingerprint, lrs)
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
        if not (unchanged or outside or self._eval_streak or self._repeat_streak):
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
            "interval": self.interval,
        }
