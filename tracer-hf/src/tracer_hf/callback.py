"""`TransformersCallback`: maps `transformers.Trainer` events onto one Tracer run.

HF's `report_to` is a closed list, so Tracer plugs in through `callbacks=[...]`.
- train begin: a run, or the resumed one; config = TrainingArguments + the model's config;
  the model watched, with the Trainer's optimizer for the silent-bug probe. World process
  zero writes the run; other ranks get a follower that sends their gradient summaries
  (`tracer.capture.gradients.ranks`): one run per job;
- `on_step_begin`: the Tracer step becomes `global_step + 1`, the step being trained;
- `on_pre_optimizer_step`: gradient capture (clipped, unscaled, synced), once per optimizer
  step; with `on_nonfinite="skip"`, the step is skipped there when a gradient is non-finite
  on any rank (`run.skip_nonfinite_step`), except under fp16's GradScaler, which skips such
  a step itself (and whose `unscale_` may still be to come when no clipping is set);
- `on_optimizer_step`: a step the optimizer skipped (fp16 overflow) is recorded, not captured;
- `on_step_end`: `halt_on` anomalies set `control.should_training_stop`;
- `on_log` / `on_evaluate`: metrics at `global_step`, copied (other callbacks mutate the
  dict); the end-of-training totals become run summary values, not series;
- `on_evaluate` / `on_predict` outside training: see "Evaluate and predict" below;
- `on_save`: the checkpoint's path and step (`record_model_save`), and `tracer_run.json`
  written into it;
- train end: finish.

Resuming. `trainer.train(resume_from_checkpoint=path)` continues the checkpoint's run (same
run id, steps going on from the checkpoint's), wherever the checkpoint was saved or moved:
see `tracer_hf.checkpoints` for how the run id travels.

Evaluate and predict. `trainer.evaluate()` and `trainer.predict()` outside `train()` report
through `on_evaluate` and `on_predict`, their only events (HF has no "evaluation begins" or
"ends" event), so the callback starts, logs and ends a run inside that one call; the metrics
are stored at `state.global_step`:
- after a `train()` whose run finished, on the same callback: in that run. It is resumed,
  the metrics logged, and it is ended "finished" again with its `total_steps` unchanged;
- otherwise (no train() on this callback, or its run failed: a failed run is never resumed
  and marked finished): in a run of their own, config = the TrainingArguments, the model's
  config and `"stage": "evaluate"` (or `"predict"`), `total_steps` = `global_step` (0 for a
  model the Trainer has not trained). A later evaluate or predict on the callback goes into
  that run too (`evaluate()` on a dict of datasets calls `on_evaluate` once per dataset).
The `on_log` that `evaluate()` sends first carries the same metrics and is not stored outside
training; neither is any other `trainer.log()` outside training.

auto_find_batch_size. After an out-of-memory error, accelerate's `find_executable_batch_size`
(which wraps HF's inner training loop) calls it again with a smaller batch, inside the same
`train()`: HF makes a new TrainerState (`global_step` back to 0, or to the resumed
checkpoint's) and calls `on_train_begin` again without an `on_train_end`. The callback takes
an `on_train_begin` that finds its training's run open, with `auto_find_batch_size` set and
a `state.train_batch_size` smaller than the open training's, for that retry: the run goes on
(no second run, nothing marked failed), counting the new TrainerState's steps. Steps the
failed attempt had completed are trained again and their values replace the stored ones (a
series keeps the value written last at a step), so the run reads as the training that
completed. The batch size HF settled on is the run summary's `train_batch_size` (the config
keeps the TrainingArguments as given). A retry of a training resumed from a checkpoint is
not told apart (HF reloads the checkpoint's batch size into the new state): its run is ended
"failed" and at once resumed from that checkpoint, which names the same run, so it is still
one run. A `train()` the user calls again after one that raised (the batch size not
smaller) is a new training (see Exceptions).

Exceptions. HF has no exception event, and nothing a callback can see marks an exception
leaving `train()`: `Trainer.train` has no try/finally around the loop and calls no callback
on the way out, and callbacks get no handle on the call itself (no trainer, no context they
could wrap). A model forward hook would see only exceptions raised inside the forward, and
also the out-of-memory errors auto_find_batch_size recovers from. So after an exception the
run stays open (status "running" in storage) and is ended "failed" later: by the excepthook,
with the error, when the exception is uncaught; at exit when the script caught it; or by the
next `train()` on the same callback. An `evaluate()` or `predict()` in between is stored in
that open run, which is not marked finished. However the run ends, its `total_steps` is the
Trainer's own count of completed optimizer steps (`state.global_step` of the TrainerState the
training runs on), not the step that was being trained when it crashed.

DeepSpeed: parameters' gradients are partitioned and not visible to callbacks, so per-layer
capture finds none; the engine's global norm still reaches Tracer as the `grad_norm` HF logs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar, Optional

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments

from tracer import TrainingTracer
from tracer.integrations.adapter import RunNotFoundError, TracerAdapter, scalar_metrics
from tracer_hf.checkpoints import (
    exportable_state,
    keep_in_checkpoints,
    run_to_resume,
    write_run_file,
)

logger = logging.getLogger(__name__)

CAPTURE_POINT = "hf_on_pre_optimizer_step"
# Logged once by the Trainer at the end of training: run totals, not a time series.
SUMMARY_KEYS = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
    }
)


class TransformersCallback(TracerAdapter, TrainerCallback, ExportableState):
    """Trace a `transformers.Trainer` run: `callbacks=[TransformersCallback(project=...)]`.

    Keyword arguments are `TracerConfig` settings (`checkpoint_interval`, `halt_on`,
    `storage_path`, ...), checked here so a typo fails before training starts.
    """

    # The TrainerState of the training going on belongs to this process, like the run.
    process_local: ClassVar[dict[str, Callable[[], Any]]] = {
        **TracerAdapter.process_local,
        "_trainer_state": lambda: None,
        "_continuable": lambda: None,
        "_batch_size": lambda: None,
    }

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        self.init_tracer(project, run_name, config)
        self._trainer_state: Optional[TrainerState] = None
        # (run id, total_steps) of this callback's last run when it ended "finished": the run
        # that a later evaluate() or predict() continues.
        self._continuable: Optional[tuple[str, int]] = None
        # The train batch size of the training going on (auto_find_batch_size retries).
        self._batch_size: Optional[int] = None

    # -- start and end ----------------------------------------------------------------------
    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.run is not None and self.active:
            if self._is_smaller_batch_retry(args, state):
                self._continue_with_smaller_batch(self.run, state)
                return
            self.run.finish(
                "failed",
                error="the previous trainer.train() ended without"
                " on_train_end (an exception inside training)",
            )
        self._trainer_state = state  # after the previous run ended: it counts that training
        self._continuable = None
        self._batch_size = state.train_batch_size
        run_config = self._run_config(args, model)
        resume = run_to_resume(args, state, self.settings["project_name"])
        unfinished = (
            "training ended without on_train_end (an exception inside trainer.train(),"
            " or the process exited)"
        )
        try:
            run = self.start_run(
                run_config,
                resume=resume,
                unfinished=unfinished,
                completed_steps=self._completed_steps,
                resume_at=state.global_step,  # what the run stored after it is redone
            )
        except RunNotFoundError:
            # The checkpoint's run is not in this storage (a checkpoint from another machine).
            if resume is None:
                raise
            logger.warning(
                "Tracer: the checkpoint's run %s is not in this storage; starting a new run.",
                resume,
            )
            run = self.start_run(
                run_config, unfinished=unfinished, completed_steps=self._completed_steps
            )
        keep_in_checkpoints(state, type(self).__name__, self.state())
        if model is not None:  # the optimizer exists by now (Accelerate's wrapper of it)
            run.watch(model, kwargs.get("optimizer"), capture_point=CAPTURE_POINT)
        if args.auto_find_batch_size:
            self._record_batch_size(run, state)

    def _is_smaller_batch_retry(self, args: TrainingArguments, state: TrainerState) -> bool:
        """Whether this on_train_begin, with the run of the training before still open, is
        `auto_find_batch_size` retrying that training with a smaller batch after running out
        of memory (the only way HF begins training again inside one train() call)."""
        previous, now = self._batch_size, state.train_batch_size
        return (
            bool(args.auto_find_batch_size)
            and state is not self._trainer_state
            and previous is not None
            and now is not None
            and now < previous
        )

    def _continue_with_smaller_batch(self, run: TrainingTracer, state: TrainerState) -> None:
        """The retry goes on in the same run: steps are counted on HF's new TrainerState;
        the model is the one already watched (HF only unwraps it)."""
        logger.warning(
            "Tracer: training restarts from step %d with batch size %s after running out of"
            " memory with %s (auto_find_batch_size); run %s goes on.",
            state.global_step,
            state.train_batch_size,
            self._batch_size,
            run.run_id,
        )
        self._trainer_state = state
        self._batch_size = state.train_batch_size
        keep_in_checkpoints(state, type(self).__name__, self.state())
        self._record_batch_size(run, state)

    @staticmethod
    def _record_batch_size(run: TrainingTracer, state: TrainerState) -> None:
        """The batch size auto_find_batch_size trains with, as the run summary's
        `train_batch_size` (a retry's value replaces the one before)."""
        if state.train_batch_size is not None:
            run.log_summary({"train_batch_size": state.train_batch_size})

    @staticmethod
    def _run_config(args: TrainingArguments, model: Any) -> dict[str, Any]:
        """A new run's config: the TrainingArguments and the model's config, as JSON."""
        run_config: dict[str, Any] = {
            "training_args": json.loads(args.to_json_string())  # type: ignore[no-untyped-call]
        }
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            run_config["model_config"] = json.loads(json.dumps(model_config.to_dict(), default=str))
        return run_config

    def _completed_steps(self) -> int:
        """The optimizer steps the Trainer has completed, `global_step`: what a run that ends
        without on_train_end (a crash, at exit or at the next train()) stores as total_steps.
        Tracer's own count would include the step that was being trained."""
        state = self._trainer_state
        if state is None:  # a copy of this callback in another process: the run counts
            raise RuntimeError("no TrainerState in this process")
        return int(state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or not run.active:
            return
        # Close the last optimizer step: finish() closes an open step only when it holds
        # metrics, and its gradient capture would be lost when nothing was logged at it.
        run.log({}, step=state.global_step + 1)
        self._end(state.global_step)

    def _end(self, total_steps: int) -> None:
        """End the run ("failed" when halt_on stopped it) and remember it when it finished,
        for a later evaluate() or predict()."""
        run = self.run
        if run is None or not run.active:
            return
        halted = run.should_stop
        self.end_run(total_steps=total_steps)
        self._continuable = None if halted else (run.run_id, total_steps)

    # -- steps ------------------------------------------------------------------------------
    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None and self.run.active:
            self.run.log({}, step=state.global_step + 1)

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.run is not None:
            self.run.capture_gradients()
            if optimizer is not None and getattr(optimizer, "scaler", None) is None:
                self.run.skip_nonfinite_step(optimizer)

    def on_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.run is not None and getattr(optimizer, "step_was_skipped", False):
            self.run.record_skipped_optimizer_step()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None and self.run.should_stop:
            control.should_training_stop = True

    # -- metrics and saves ------------------------------------------------------------------
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        run = self.run
        if run is None or not run.active:
            return
        values, _ = scalar_metrics(logs)  # HF logs strings and lists too
        totals = {k: v for k, v in values.items() if k in SUMMARY_KEYS}
        if totals and "train_runtime" in values:
            run.log_summary(totals)
            values = {k: v for k, v in values.items() if k not in SUMMARY_KEYS}
        if values.keys() - {"epoch"}:  # a logs dict of only the epoch is no news
            run.log(values, step=state.global_step)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Optional[dict[str, Any]] = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        self._record_evaluation("evaluate", args, state, metrics, model)

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Optional[dict[str, Any]] = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        self._record_evaluation("predict", args, state, metrics, model)

    def _record_evaluation(
        self,
        stage: str,
        args: TrainingArguments,
        state: TrainerState,
        metrics: Optional[dict[str, Any]],
        model: Any,
    ) -> None:
        """Metrics of an evaluate() or predict(): into the training's run while one is open;
        outside training, into the last finished run or a run of the stage's own, started
        and ended here (see the module docstring)."""
        values, _ = scalar_metrics(metrics)
        run = self.run
        if run is not None and run.active:
            if values:
                run.log(values, step=state.global_step)
            return
        if not values:
            return
        continued, self._continuable = self._continuable, None
        if continued is not None:
            run_id, total_steps = continued
            run = self.start_run(resume=run_id or None)  # "" on ranks that only follow
        else:
            total_steps = state.global_step
            run = self.start_run({**self._run_config(args, model), "stage": stage})
        run.log(values, step=state.global_step)
        self._end(total_steps)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or not run.active or not run.is_writer:
            return
        directory = os.path.join(args.output_dir or ".", f"checkpoint-{state.global_step}")
        write_run_file(directory, run)  # first: a pinned checkpoint resumes the same run
        run.record_model_save(directory, step=state.global_step)

    def state(self) -> dict[str, Any]:
        """`ExportableState`: what HF saves of this callback in each checkpoint's
        `trainer_state.json` (see `tracer_hf.checkpoints`)."""
        return exportable_state(self.settings, self.run)
