"""`tracer_accelerate.watch(accelerator, model, optimizer)`: gradient health and resumable runs
for Accelerate loops.

Accelerate has trackers but no training events, so the watch takes them from the objects
`accelerator.prepare` returned. Call it on every rank, after `prepare` and before
`accelerator.load_state` (on the main process after `init_trackers` too):
- the prepared optimizer wraps a torch optimizer whose step pre-hook fires only for a real
  step (after accumulation: `accumulate()` skips the others; after GradScaler's unscale and
  DDP's all-reduce); there the run moves to step k (the k-th optimizer step, counted from 1,
  like `completed_steps` in Accelerate's examples) and captures the gradients, once; with
  `on_nonfinite="skip"` it then skips the step when a gradient is non-finite on any rank
  (`run.skip_nonfinite_step`); a step fp16's GradScaler skips never gets there;
- the prepared optimizer's `step` is wrapped to record a step Accelerate skipped
  (`step_was_skipped`: an fp16 overflow) as `optimizer/skipped_step`;
- the torch optimizer gets the silent-bug probe (sampled at real optimizer steps only);
- checkpoints: with `register_save_state_pre_hook` / `register_load_state_pre_hook` (the hooks
  Accelerate offers for saving "configurations in addition to model weights"),
  `accelerator.save_state(dir)` writes `dir/tracer_run.json` (the run id and the optimizer steps
  done; main process) and, once `save_state` has written the checkpoint (it is wrapped for that:
  the pre-hook runs before the files exist), records the save in the run, and
  `accelerator.load_state(dir)` reads it on every rank: the step count continues from the saved
  one, and on the main process the `AccelerateTracker` resumes that run instead of starting a
  new one. A checkpoint without the file (saved before Tracer was added) loads as before, and
  the run is a new one. A plain file, not `register_for_checkpointing`: Accelerate refuses to
  load a checkpoint whose number of registered objects differs, so that would break checkpoints
  saved without Tracer. A `load_state` after this process has taken optimizer steps (say, the
  best checkpoint loaded for a last evaluation) changes neither the run nor the count;
- `accelerator.end_training` is wrapped so that every rank finishes its part before
  Accelerate destroys the process group;
- a `halt_on` anomaly sets Accelerate's trigger: break when `accelerator.check_trigger()`.

When the run starts. On the main process the run is the `AccelerateTracker`'s, which starts
it when training does (its module docstring says why: `init_trackers` comes before
`load_state` in a resumed script): the watch attaches to it at the model's first forward (a
forward pre-hook, removed once used), or at the first of an optimizer step, a `save_state` or
a `load_state` that resumes a run. A run of a plain `tracer.init` is used as it is. On other
ranks the run is a follower, made here, that only sends this rank's gradient summaries.

`watch` returns the `AccelerateWatch`: its `run` (None on the main process until training
starts; `accelerator.get_tracker("tracer", unwrap=True)` gives the same), its
`optimizer_steps` count, and `remove()`. The tracker's `optimizer_steps` and the run's
`completed_steps` read that count, so `total_steps` is the optimizer steps done, also when
the process dies mid-step.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import tracer
from tracer.config import TracerConfig
from tracer.core.tracer import TrainingTracer
from tracer.integrations.adapter import torch_optimizer
from tracer_accelerate.tracker import TRACKER_NAME, AccelerateTracker

logger = logging.getLogger(__name__)

CAPTURE_POINT = "accelerate_optimizer_step"
RUN_FILE = "tracer_run.json"  # the name the HF adapter writes into its checkpoints too


def _tracer_tracker(accelerator: Any) -> Optional[AccelerateTracker]:
    """The AccelerateTracker this accelerator logs with (started on the main process only)."""
    for tracker in list(getattr(accelerator, "trackers", [])) + list(
        getattr(accelerator, "log_with", []) or []
    ):
        if isinstance(tracker, AccelerateTracker):
            return tracker
    return None


def _read_run_file(directory: str) -> Optional[dict[str, Any]]:
    path = os.path.join(directory, RUN_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except FileNotFoundError:
        logger.info(
            "Tracer found no %s in %s; the run is not resumed from it.", RUN_FILE, directory
        )
        return None
    except (OSError, ValueError) as error:
        logger.warning(
            "Tracer could not read %s (%s); the run is not resumed from it.", path, error
        )
        return None
    return saved if isinstance(saved, dict) else None


class AccelerateWatch:
    """The hooks of one watched (model, optimizer) pair; `remove()` undoes them."""

    def __init__(self, accelerator: Any, model: Any, optimizer: Any) -> None:
        self.accelerator = accelerator
        self.model = model
        self.module = accelerator.unwrap_model(model)
        self.optimizer = optimizer
        self.inner = torch_optimizer(optimizer)
        self.tracker = _tracer_tracker(accelerator)
        self.optimizer_steps = 0  # optimizer steps done (continued from a loaded checkpoint)
        self.skipped = 0
        self.run: Optional[TrainingTracer] = None
        self._owns_run = False  # a follower made here ends with the job
        # The main process's run is the tracker's, started when training starts.
        self._lazy = (
            accelerator.is_main_process
            and self.tracker is not None
            and self.tracker in getattr(accelerator, "trackers", [])
        )
        if self._lazy:
            assert self.tracker is not None
            self.tracker.optimizer_steps = self.count
            if self.tracker.active:
                self._attach(self.tracker.ensure_run())
        else:
            self._attach(self._other_run())
        self._handles = [
            self.inner.register_step_pre_hook(self._before_step),
            self.inner.register_step_post_hook(self._after_step),
            accelerator.register_save_state_pre_hook(self._before_save),
            accelerator.register_load_state_pre_hook(self._before_load),
        ]
        self._forward_handle = (
            model.register_forward_pre_hook(self._before_forward) if self.run is None else None
        )
        self._original_step = optimizer.step
        optimizer.step = self._step
        self._original_end = accelerator.end_training
        accelerator.end_training = self._end_training
        self._saving: Optional[tuple[TrainingTracer, str]] = None  # a save_state under way
        self._original_save = accelerator.save_state
        accelerator.save_state = self._save_state

    def count(self) -> int:
        """The optimizer steps done so far."""
        return self.optimizer_steps

    # -- the run ------------------------------------------------------------------------------
    def _other_run(self) -> TrainingTracer:
        """A plain `tracer.init` run, or on ranks other than 0 a follower made here."""
        current = tracer.get_run()
        if current is not None and current.active:
            return current
        if self.accelerator.is_main_process:
            raise RuntimeError(
                "tracer_accelerate.watch needs a run on the main process: pass"
                " log_with=[AccelerateTracker(...)] (or log_with='tracer') to the Accelerator"
                " and call accelerator.init_trackers(...) before watch(), or call tracer.init()"
                " first"
            )
        tracker = self.tracker
        settings = dict(tracker.settings) if tracker is not None else {"project_name": TRACKER_NAME}
        self._owns_run = True
        return TrainingTracer(TracerConfig(**settings))  # a follower on this rank

    def _started(self) -> Optional[TrainingTracer]:
        """This rank's run, the tracker's started now if it had not (training started)."""
        if self.run is None and self._lazy and self.tracker is not None:
            self._attach(self.tracker.ensure_run())
        return self.run

    def _attach(self, run: TrainingTracer) -> None:
        self.run = run
        if run.completed_steps is None:
            run.completed_steps = self.count
        # Also from inside the optimizer's pre-hooks: the probe adds only a post-hook there.
        run.watch(self.module, self.inner, capture_point=CAPTURE_POINT)
        if self.model is not self.module:  # DDP: each rank's own norm, before the all-reduce
            run.attach_data_parallel(self.model)
        handle = getattr(self, "_forward_handle", None)
        if handle is not None:
            handle.remove()
            self._forward_handle = None

    def _before_forward(self, module: Any, args: Any) -> None:
        self._started()

    # -- optimizer steps ----------------------------------------------------------------------
    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        run = self._started()
        if run is not None and run.active:
            run.log({}, step=self.optimizer_steps + 1)
            run.capture_gradients()
            run.skip_nonfinite_step(optimizer)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        if self.run is not None and self.run.should_stop:
            self.accelerator.set_trigger()

    def _step(self, *args: Any, **kwargs: Any) -> Any:
        result = self._original_step(*args, **kwargs)
        if self.accelerator.sync_gradients and getattr(self.optimizer, "step_was_skipped", False):
            self.skipped += 1
            run = self._started()
            if run is not None and run.active:
                run.log({}, step=self.optimizer_steps + 1)
                run.record_skipped_optimizer_step()
            self.optimizer_steps += 1  # counted, as Accelerate's examples count completed steps
        return result

    # -- checkpoints --------------------------------------------------------------------------
    def _writes_run_file(self) -> bool:
        """The processes whose files Accelerate's own state goes to: the main one, or with
        `save_on_each_node` each node's local main process."""
        if self.accelerator.is_main_process:
            return True
        config = getattr(self.accelerator, "project_configuration", None)
        each_node = bool(getattr(config, "save_on_each_node", False))
        return each_node and bool(self.accelerator.is_local_main_process)

    def _before_save(self, models: Any, weights: Any, output_dir: str) -> None:
        """`save_state`: note the run and the step count in the checkpoint."""
        run = self._started()
        if not self._writes_run_file():
            return
        saved: dict[str, Any] = {"optimizer_steps": self.optimizer_steps}
        if run is not None and run.active and run.is_writer:
            saved.update(run_id=run.run_id, project=run.config.project_name, run_name=run.run_name)
            self._saving = (run, output_dir)  # recorded once written: `_save_state`
        try:
            with open(os.path.join(output_dir, RUN_FILE), "w", encoding="utf-8") as handle:
                json.dump(saved, handle)
        except OSError as error:  # a checkpoint without it still loads; the run is then new
            logger.warning("Tracer could not write %s into %s: %s", RUN_FILE, output_dir, error)

    def _save_state(self, *args: Any, **kwargs: Any) -> Any:
        """`accelerator.save_state`, then the save recorded in the run: only now are its
        files written (the pre-hook runs before them), which pinning links."""
        self._take_saving()
        result = self._original_save(*args, **kwargs)
        saving = self._take_saving()  # set by `_before_save` in the call just made
        if saving is not None and saving[0].active:
            saving[0].record_model_save(saving[1], step=self.optimizer_steps)
        return result

    def _take_saving(self) -> Optional[tuple[TrainingTracer, str]]:
        saving, self._saving = self._saving, None
        return saving

    def _before_load(self, models: Any, input_dir: str) -> None:
        """`load_state`: continue the step count and the run the checkpoint names."""
        saved = _read_run_file(input_dir)
        if saved is None:
            return
        count = saved.get("optimizer_steps")
        if isinstance(count, int) and count >= 0:
            if self.optimizer_steps == 0:
                self.optimizer_steps = count
            elif count != self.optimizer_steps:
                logger.info(
                    "Tracer keeps counting from optimizer step %d: this process has trained"
                    " already, so the checkpoint's count (%d) is not taken over.",
                    self.optimizer_steps,
                    count,
                )
        run_id = saved.get("run_id")
        if not (isinstance(run_id, str) and run_id and self.accelerator.is_main_process):
            return
        if self._lazy and self.tracker is not None:
            if self.tracker.resume_from(run_id):
                self._started()
        elif self.run is not None and self.run.run_id != run_id:
            logger.info(
                "The checkpoint names Tracer run %s; this process writes run %s"
                " (tracer.init(resume=%r) continues the checkpoint's run).",
                run_id,
                self.run.run_id,
                run_id,
            )

    # -- end ----------------------------------------------------------------------------------
    def _end_training(self) -> None:
        """Every rank: end this rank's part, then Accelerate's end_training."""
        if self._owns_run and self.run is not None:
            self.run.finish()
        self.remove()
        self.accelerator.end_training()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._forward_handle is not None:
            self._forward_handle.remove()
            self._forward_handle = None
        if self.optimizer.step == self._step:
            self.optimizer.step = self._original_step
        if self.accelerator.end_training == self._end_training:
            self.accelerator.end_training = self._original_end
        if self.accelerator.save_state == self._save_state:
            self.accelerator.save_state = self._original_save


def watch(accelerator: Any, model: Any, optimizer: Any) -> AccelerateWatch:
    """Trace gradient health of a prepared `model` / `optimizer` and keep the run across
    `save_state` / `load_state` (see the module docstring); returns the watch."""
    return AccelerateWatch(accelerator, model, optimizer)
