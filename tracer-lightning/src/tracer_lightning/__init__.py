"""Tracer for Lightning, both `lightning.pytorch` and `pytorch_lightning`, and for
Lightning Fabric (`TracerFabricLogger`).

from tracer.integrations import LightningCallback      # or: from tracer_lightning import ...
trainer = pl.Trainer(callbacks=[LightningCallback(project="my-project")])
"""

from __future__ import annotations

from tracer_lightning.callback import LightningCallback
from tracer_lightning.fabric import TracerFabricLogger
from tracer_lightning.logger import TracerLogger

__all__ = ["LightningCallback", "TracerFabricLogger", "TracerLogger"]
