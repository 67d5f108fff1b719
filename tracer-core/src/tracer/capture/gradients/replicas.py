"""A fingerprint of each watched model's weights on this rank, every
`rank_weight_check_interval` optimizer steps: what shows the replicas of a data-parallel job
drifting apart (README "What Tracer checks for silent bugs").

In healthy DDP every rank holds bitwise the same weights after each optimizer step. They
drift apart when the forward bypasses the wrapper (`ddp_model.module(x)`: no gradient
all-reduce, each rank trains on its own data while its gradient norm looks healthy), when a
rank loads another checkpoint after DDP broadcast the weights, or when one rank changes a
parameter alone. Each rank's fingerprint rides its per-rank rows (`ranks.py`) to rank 0,
which stores it as `rank/<r>/weight_fingerprint` (`rank/<r>/m<i>.weight_fingerprint` for the
i-th watched model) for the `replica_divergence` detector.

When: at the gradient capture of the first watched model (`RankSummaries.stage`), at the
first captured step at or after each multiple of the interval. Whatever the capture point
(the optimizer's step pre-hook, the end of backward, an adapter's framework event), the
weights there are the result of the previous optimizer step and not yet this one's, and
every rank reaches that point at the same tracer step, so rank 0 compares the same step of
every rank. The first capture (step 0 of a fresh run) checks the starting weights: a rank
that loaded another checkpoint shows before any training.

What: a weighted sum (weights from 1 to 2 by position) of a strided sample of at most
`SAMPLE_ELEMENTS` values of each parameter, frozen ones included (a checkpoint loaded on one
rank changes those too), in float32: a few kernels per model and no host sync; the values
go to the host with the rank's block of rows (`copy_to_host`). With the model's element
count, so that rank 0 compares only ranks holding the same parameters (pipeline stages do
not). Sharded parameters (DTensor / FSDP2, FSDP1's flat parameters and the modules it
wraps) are left out: their shards differ on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from tracer.capture.transfer import HostCopy

logger = logging.getLogger(__name__)

SAMPLE_ELEMENTS = 2048  # values of each parameter in the fingerprint

# A fingerprint as it travels to rank 0: (step, model prefixes, their element counts, values).
Mark = tuple[int, list[str], list[int], list[float]]


def fingerprint_series(rank: int, prefix: str) -> str:
    """The series of rank `rank`'s fingerprint of the watched model with name prefix `prefix`."""
    return f"rank/{rank}/{prefix}weight_fingerprint"


def is_sharded(param: Any) -> bool:
    """A parameter whose local value is a shard: DTensor (FSDP2, tensor parallel) or FSDP1's
    flat parameter."""
    return (
        hasattr(param, "to_local")
        or getattr(param, "_is_flat_param", False)
        or type(param).__name__ == "FlatParameter"
    )


def replicated_parameters(model: Any) -> list[Any]:
    """The parameters every data-parallel rank holds whole (each once), in model order."""
    inside_fsdp: set[int] = set()
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":  # FSDP1: views of its shards
            inside_fsdp.update(id(p) for p in module.parameters())
    seen: set[int] = set()
    found = []
    for param in model.parameters():
        if id(param) in seen or id(param) in inside_fsdp or is_sharded(param):
            continue
        seen.add(id(param))
        if param.numel():
            found.append(param)
    return found


@dataclass
class _Model:
    prefix: str
    params: list[Any]
    elements: int  # the parameters' total element count: equal on ranks holding the same
    weights: dict[Any, Any] = field(default_factory=dict)  # device -> position weights


@dataclass
class Fingerprint:
    """The fingerprints of one step, on the device, and what they are of."""

    values: Any  # float32 device vector, one per model
    prefixes: list[str]
    elements: list[int]


class WeightFingerprints:
    """This rank's weight fingerprints: which models, when due, the device values."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self._models: list[_Model] = []
        self._next_due = 0
        self._failed = False

    def add(self, prefix: str, model: Any) -> None:
        params = replicated_parameters(model)
        if not params:
            logger.info(
                "Tracer: %s has no parameter held whole by every rank (sharded): its"
                " replicas' weights are not compared.",
                type(model).__name__,
            )
            return
        elements = sum(int(p.numel()) for p in params)
        self._models.append(_Model(prefix, params, elements))

    def elements(self) -> dict[str, int]:
        """Each fingerprinted model's element count, by its name prefix."""
        return {model.prefix: model.elements for model in self._models}

    def due(self, step: int) -> bool:
        """Whether a capture at `step` takes a fingerprint (the first at or after each multiple
        of the interval)."""
        return bool(self._models) and not self._failed and step >= self._next_due

    def take(self, step: int) -> Optional[Fingerprint]:
        """The fingerprints of the weights now; None (and never again) when that fails."""
        self._next_due = (step // self.interval + 1) * self.interval
        try:
            import torch

            with torch.no_grad():
                values = torch.stack([self._one(model) for model in self._models])
        except Exception:
            self._failed = True
            logger.exception(
                "Tracer's weight fingerprint failed and stops; the rest of the capture goes on."
            )
            return None
        return Fingerprint(
            values,
            [model.prefix for model in self._models],
            [model.elements for model in self._models],
        )

    def _one(self, model: _Model) -> Any:
        """One device scalar: the weighted sum of the model's strided samples."""
        import torch

        by_device: dict[Any, list[Any]] = {}
        for param in model.params:
            flat = param.detach().reshape(-1)
            stride = max(1, -(-flat.numel() // SAMPLE_ELEMENTS))
            by_device.setdefault(flat.device, []).append(flat[::stride].to(torch.float32))
        total: Any = None
        for device, samples in by_device.items():
            values = torch.cat(samples)
            weights = model.weights.get(device)
            if weights is None or weights.numel() != values.numel():
                weights = torch.linspace(1.0, 2.0, values.numel(), device=device)
                model.weights[device] = weights
            part = torch.dot(values, weights)
            total = part if total is None else total + part.to(total.device)
        return total


def host_marks(taken: list[tuple[int, Fingerprint]], values: Optional[HostCopy]) -> list[Mark]:
    """The fingerprints taken in a block, from the one host copy of their values (writer
    thread or block hand-on: long since copied)."""
    if values is None:
        return []
    flat = values.get().tolist()
    marks: list[Mark] = []
    start = 0
    for step, fingerprint in taken:
        end = start + len(fingerprint.prefixes)
        marks.append((step, fingerprint.prefixes, fingerprint.elements, flat[start:end]))
        start = end
    return marks


def like_rank_zero(ours: dict[str, int], marks: list[Mark]) -> tuple[list[Mark], dict[str, str]]:
    """Another rank's fingerprints of the models holding as many values as rank 0's model of
    the same prefix (`ours`), and those left out ("prefix": "theirs vs ours"): a pipeline
    stage is no replica of rank 0's, and comparing it would cry wolf."""
    kept: list[Mark] = []
    unlike: dict[str, str] = {}
    for step, prefixes, elements, values in marks:
        same = [
            (prefix, count, value)
            for prefix, count, value in zip(prefixes, elements, values, strict=True)
            if ours.get(prefix) == count
        ]
        for prefix, count in zip(prefixes, elements, strict=True):
            if ours.get(prefix) != count:
                unlike[prefix or "model"] = f"{count} values against {ours.get(prefix, 0)}"
        if same:
            kept.append((step, [s[0] for s in same], [s[1] for s in same], [s[2] for s in same]))
    return kept, unlike
