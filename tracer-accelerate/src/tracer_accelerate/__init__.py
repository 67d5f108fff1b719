"""Tracer for Hugging Face Accelerate.

    from tracer.integrations import AccelerateTracker   # pip install 'tracer-core[accelerate]'
    import tracer_accelerate

    accelerator = Accelerator(log_with=[AccelerateTracker("my-project")])
    # or, once tracer_accelerate is imported: Accelerator(log_with="tracer")
    accelerator.init_trackers("my-project", config={"lr": 1e-3})  # the run starts with training
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    tracer_accelerate.watch(accelerator, model, optimizer)      # on every rank
    accelerator.load_state(checkpoint)    # optional, after watch: continues the saved run
    ...                                   # accelerator.save_state(dir) saves the run id too
    accelerator.end_training()

Importing this package registers the tracker under the name "tracer" with Accelerate's
`register_tracker_class` (Accelerate >= 1.15; older versions take the instance form only).
"""

from __future__ import annotations

import logging

from tracer_accelerate.tracker import AccelerateTracker
from tracer_accelerate.watching import AccelerateWatch, watch

__all__ = ["AccelerateTracker", "AccelerateWatch", "register", "watch"]

logger = logging.getLogger(__name__)


def register() -> bool:
    """Make `Accelerator(log_with="tracer")` work; False when this Accelerate cannot."""
    try:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, register_tracker_class
    except ImportError:
        logger.debug("this accelerate has no register_tracker_class; use log_with=[instance]")
        return False
    if LOGGER_TYPE_TO_CLASS.get(AccelerateTracker.name) is not AccelerateTracker:
        register_tracker_class(AccelerateTracker)
    return True


register()
