"""Tracer for the HuggingFace `transformers.Trainer`.

from tracer.integrations import TransformersCallback   # or: from tracer_hf import ...
trainer = Trainer(..., callbacks=[TransformersCallback(project="my-project")])
"""

from __future__ import annotations

from tracer_hf.callback import TransformersCallback

__all__ = ["TransformersCallback"]
