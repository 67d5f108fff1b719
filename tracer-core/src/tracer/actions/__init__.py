"""What Tracer does about an anomaly beyond storing it: notify a webhook, pin the last healthy
model checkpoint. Each action is a plain class driven by `plugins/builtins.py` from the
`tracer_anomaly` hook, except pinning (`pinning.py`, `pins.py`, `trees.py`), which the run
drives itself (`core/model_saves.py`): it must see each model save as it is recorded, and
pin before the halt flag is set so that `TrainingHalted` names the pinned path. None of them
may block a training step (slow work runs on the action's own thread). Skipping a non-finite
optimizer step is not here: it is a decision at the capture point (`capture/gradients/`),
taken on all ranks together.
"""
