"""How a run's id travels in HF checkpoints, so that resuming from one continues the run.

`trainer.train(resume_from_checkpoint=path)` should continue the checkpoint's run (same run
id, steps going on from the checkpoint's). No event tells a callback that path: `train()`
does not set `args.resume_from_checkpoint`, and the callbacks get no trainer. What they do get
at train begin is the TrainerState HF loaded from the checkpoint's `trainer_state.json`, and
HF keeps in it the `state()` of every callback that is an `ExportableState` (HF's public way
for a callback to save state in checkpoints). So `TransformersCallback` is one: its `state()`
(`exportable_state`) carries the run id, and the settings that rebuild the callback for
`restore_callback_states_from_checkpoint`; it is written into every checkpoint wherever it is
saved, moved or copied, and read back from `state.stateful_callbacks` at train begin.

`RUN_FILE` (`tracer_run.json`), which `on_save` writes into each checkpoint folder, is the
fallback for checkpoints saved without that state (looked for in `args.resume_from_checkpoint`
and in `output_dir/checkpoint-<global_step>`). A saved run that is not in this storage (a
checkpoint from another machine) gives a new run, with a warning (the callback's doing).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Optional

from transformers.trainer_callback import TrainerState
from transformers.training_args import TrainingArguments

from tracer import TrainingTracer
from tracer.config import SECRET_SETTINGS

logger = logging.getLogger(__name__)

RUN_FILE = "tracer_run.json"


def run_record(run: Optional[TrainingTracer]) -> Optional[dict[str, Any]]:
    """What checkpoints keep of the run: id, project, name (None on ranks that only follow)."""
    if run is None or not run.is_writer:
        return None
    return {"run_id": run.run_id, "project": run.config.project_name, "run_name": run.run_name}


def exportable_state(settings: Mapping[str, Any], run: Optional[TrainingTracer]) -> dict[str, Any]:
    """The callback's `ExportableState.state()`: HF calls it at every save, and when it makes
    a TrainerState. "tracer_run" is the run; "args" rebuild an equivalent callback, those
    settings JSON can hold (HF writes the file with `json.dumps`), secrets aside (a rebuilt
    callback reads the webhook URL from the environment, as the config does)."""
    remaining = dict(settings)
    args: dict[str, Any] = {
        "project": remaining.pop("project_name"),
        "run_name": remaining.pop("run_name"),
    }
    for name, value in remaining.items():
        if name in SECRET_SETTINGS:  # a webhook URL is a secret: checkpoints get copied around
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.debug("Tracer setting %s is not saved in checkpoints: not JSON.", name)
            continue
        args[name] = value
    return {"args": args, "attributes": {}, "tracer_run": run_record(run)}


def keep_in_checkpoints(state: TrainerState, callback_name: str, saved: dict[str, Any]) -> None:
    """Make sure HF saves the callback's state in this training's checkpoints. HF refreshes,
    at each save, only the entries the TrainerState already has: a state loaded from a
    checkpoint written without the callback lacks one (and HF's save would fail on it)."""
    stateful: Any = state.stateful_callbacks
    if isinstance(stateful, dict):
        stateful.setdefault(callback_name, saved)


def write_run_file(directory: str, run: TrainingTracer) -> None:
    """`RUN_FILE` into a checkpoint folder; quietly skipped when the folder is elsewhere."""
    try:
        with open(os.path.join(directory, RUN_FILE), "w", encoding="utf-8") as handle:
            json.dump(run_record(run), handle)
    except OSError as error:  # the checkpoint may live elsewhere (save_strategy quirks)
        logger.debug("Tracer could not write %s into %s: %s", RUN_FILE, directory, error)


def run_to_resume(args: TrainingArguments, state: TrainerState, project: str) -> Optional[str]:
    """The id of the run to continue when training resumes from a checkpoint (the
    TrainerState then comes from its `trainer_state.json` with `global_step` above 0): the one
    the callback's state saved there, else the checkpoint's `RUN_FILE`."""
    if state.global_step <= 0:
        return None
    saved = _saved_run_id(state, project)
    if saved is not None:
        return saved
    candidates = []
    if isinstance(args.resume_from_checkpoint, str):
        candidates.append(args.resume_from_checkpoint)
    candidates.append(os.path.join(args.output_dir or ".", f"checkpoint-{state.global_step}"))
    for directory in candidates:
        try:
            with open(os.path.join(directory, RUN_FILE), encoding="utf-8") as handle:
                saved_run = json.load(handle)
        except (OSError, ValueError):
            continue
        if _names_a_run_of(saved_run, project):
            return str(saved_run["run_id"])
    logger.info("Tracer found no run saved in the resumed checkpoint; starting a new run.")
    return None


def _saved_run_id(state: TrainerState, project: str) -> Optional[str]:
    """The run id in a state HF saved for a Tracer callback in the checkpoint's TrainerState
    (a list when the Trainer had several)."""
    stateful: Any = state.stateful_callbacks
    if not isinstance(stateful, dict):
        return None
    for saved in stateful.values():
        for entry in saved if isinstance(saved, list) else [saved]:
            run = entry.get("tracer_run") if isinstance(entry, dict) else None
            if isinstance(run, dict) and _names_a_run_of(run, project):
                return str(run["run_id"])
    return None


def _names_a_run_of(saved_run: Any, project: str) -> bool:
    """Whether a saved run record names a run of `project`."""
    return (
        isinstance(saved_run, dict)
        and isinstance(saved_run.get("run_id"), str)
        and bool(saved_run["run_id"])
        and saved_run.get("project", project) == project
    )
