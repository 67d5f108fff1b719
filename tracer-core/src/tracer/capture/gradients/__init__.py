"""Gradient capture, the built-in collector named "gradients": one package; its parts:

- `watch.py`: `ModelWatch`, one per `tracer.watch()`: where gradients are seen (the
  optimizer's step pre-hook, or the end of backward), the device ring buffer and its batched
  read-back into the `grad/*` series and events, checkpoint statistics.
- `kernels.py`: the statistics computed on the gradients' device (the per-step summary and
  the checkpoint-only full statistics), never read back on the training thread.
- `fused.py`: the opt-in one-read Triton kernel for the per-step norms
  (`fused_gradient_kernel`); triton is imported on first use only.
- `optimizers.py`: the torch optimizer under a framework's wrapper (Accelerate, Lightning,
  Fabric), whose step hooks fire once per real optimizer step.
- `ranks.py`: in a distributed job, each rank's gradient summary sent to rank 0.
- `collector.py`: the `Collector` that ties a run's watches and rank summaries together.

Nothing here imports torch or triton at import time.
"""

from __future__ import annotations

from tracer.capture.gradients.collector import gradient_collector
from tracer.capture.gradients.watch import ModelWatch

__all__ = ["ModelWatch", "gradient_collector"]
