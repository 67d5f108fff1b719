"""What a watched model's structure says before it trains, read once at `watch()`: which modules
behave differently in train() and eval(), which parameters belong to normalisation layers, what
is trainable (the "gradient_capture" event, for `frozen_model`) and the init scale of each weight
(the "weight_scale" event). The probe (`probe.py`) and the collector use them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tracer.capture.transfer import copy_to_host
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite


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
