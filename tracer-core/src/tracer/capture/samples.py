"""Samples of the batch being trained on, so a bad batch can be looked at after the fact.

A forward hook on each watched model keeps, from every forward pass, a small copy of the
first `capture_samples` rows of each input and output tensor (at most
`MAX_ELEMENTS_PER_ROW` elements per row, `MAX_TENSORS` tensors per side; nested tuples,
lists and dicts such as HF ModelOutput are walked). The copy is one small device kernel per
tensor and no host sync. At a checkpoint the last forward's copies are sent to the writer,
which stores them with their names, shapes (the full shape, before truncation) and dtypes.
A forward pass without autograd (an evaluation under `no_grad` or `inference_mode`) never
replaces the training batch of the same step, so an anomaly's samples are the batch that
was trained on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.collector import MAX_FAILURES, Collector, Contribution
from tracer.capture.transfer import copy_to_host

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import SampleWrite

logger = logging.getLogger(__name__)

HISTORY_STEPS = 64  # at least this many recent steps' batches are kept for anomaly checkpoints
HISTORY_MAX = 1024
MAX_ELEMENTS_PER_ROW = 1024
MAX_TENSORS = 16


def tensors_in(value: Any, name: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(dotted name, tensor) for every tensor inside nested tuples, lists and dicts."""
    if depth > 4:
        return
    if hasattr(value, "detach") and hasattr(value, "shape"):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors_in(item, f"{name}.{key}" if name else str(key), depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors_in(item, f"{name}.{index}" if name else str(index), depth + 1)


class _Kept:
    __slots__ = ("copy", "dtype", "name", "role", "shape")

    def __init__(self, role: str, name: str, tensor: Any, rows: int) -> None:
        self.role = role
        self.name = name
        self.shape = list(tensor.shape)
        self.dtype = str(tensor.dtype).removeprefix("torch.")
        head = tensor.detach()
        if head.dim() == 0:
            head = head.reshape(1, 1)
        else:
            head = head[:rows]
            head = head.reshape(head.shape[0], _row_size(self.shape))  # rows may be 0
        self.copy = head[:, :MAX_ELEMENTS_PER_ROW].clone()

    def write(self, step: int, reason: str, host: Any) -> SampleWrite:
        values = host.float().tolist() if host.is_floating_point() else host.tolist()
        return {
            "step": step,
            "reason": reason,
            "role": self.role,
            "name": self.name,
            "shape": self.shape,
            "dtype": self.dtype,
            "values": values,
            "truncated": any(len(row) < _row_size(self.shape) for row in values),
        }


def _row_size(shape: list[int]) -> int:
    size = 1
    for dim in shape[1:]:
        size *= dim
    return size


class SampleCapture(Collector):
    """The built-in sample collector."""

    name = "samples"

    def __init__(self, run: RunHandle, rows: int) -> None:
        self._run = run
        self._rows = rows
        self._last: list[_Kept] = []
        # Enough steps to outlast the writer's lag: detection runs at each flush, up to
        # write_buffer_size steps behind training.
        history = min(HISTORY_MAX, max(HISTORY_STEPS, run.config.write_buffer_size + 64))
        self._history: deque[tuple[int, list[_Kept]]] = deque(maxlen=history)
        self._handles: list[Any] = []
        self._failures = 0
        self._trained_step = -1  # the last step with a forward pass under autograd

    def watch(
        self, model: Any, optimizer: Optional[Any] = None, capture_point: Optional[str] = None
    ) -> None:
        self._handles.append(model.register_forward_hook(self._on_forward, with_kwargs=True))

    def _on_forward(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        # Called by torch inside the user's forward: nothing may escape from here.
        if self._failures >= MAX_FAILURES or not self._run.active:
            return  # (not capturing: a forked child, or the run has ended)
        try:
            self._keep(args, kwargs, output)
        except Exception:
            self._failures += 1
            if self._failures == 1:
                logger.exception("Tracer could not sample a batch; training goes on.")
            elif self._failures == MAX_FAILURES:
                logger.warning("Tracer stops sampling batches after %d failures.", MAX_FAILURES)
            self._last = []

    def _keep(self, args: Any, kwargs: Any, output: Any) -> None:
        import torch

        training = torch.is_grad_enabled()
        step = self._run.current_step
        if not training and self._trained_step == step:
            return  # an evaluation pass after this step's training batch: keep the batch
        inputs = [(f"arg{i}", value) for i, value in enumerate(args)] + list(kwargs.items())
        kept: list[_Kept] = []
        for role, named in (("input", inputs), ("output", [("output", output)])):
            found = (pair for name, value in named for pair in tensors_in(value, name))
            for count, (name, tensor) in enumerate(found):
                if count >= MAX_TENSORS:
                    break
                kept.append(_Kept(role, name, tensor, self._rows))
        self._last = kept
        if training:
            self._trained_step = step
        if self._history and self._history[-1][0] == step:
            self._history[-1] = (step, kept)  # the last forward of a step wins
        else:
            self._history.append((step, kept))

    def checkpoint(self, step: int, reason: str) -> Contribution:
        if not self._last:
            return {}
        pending = [(kept, copy_to_host(kept.copy)) for kept in self._last]

        def resolve() -> list[SampleWrite]:
            return [kept.write(step, reason, copy.get()) for kept, copy in pending]

        return {"samples": resolve}

    def anomaly_sections(self, step: int) -> Contribution:
        """Writer thread: the batch of `step`, if it is still among the last steps kept."""
        for kept_step, kept in list(self._history):
            if kept_step == step:
                return {
                    "samples": [k.write(step, "anomaly", copy_to_host(k.copy).get()) for k in kept]
                }
        return {}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._last = []
        # The history stays: the writer's last flush, after this, may still find an anomaly
        # in the final steps and ask for its batch (anomaly_sections).


def sample_collector(run: RunHandle) -> Optional[Collector]:
    """Factory registered by the built-in capture plugin; None when `capture_samples` is 0."""
    rows = run.config.capture_samples
    return SampleCapture(run, rows) if rows > 0 else None
