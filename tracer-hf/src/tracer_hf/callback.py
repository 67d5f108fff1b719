"""`TransformersCallback`: maps `transformers.Trainer` events onto one Tracer run.

HF's `report_to` is a closed list, so Tracer plugs in through `callbacks=[...]`.
- train begin: a run, or the resumed one; config = TrainingArguments + the model's config;
  the model watched. World process zero writes the run; other ranks get a follower that
  sends their gradient summaries (`tracer.capture.gradients.ranks`): one run per job;
- `on_step_begin`: the Tracer step becomes `global_step + 1`, the step being trained;
- `on_pre_optimizer_step`: gradient capture (clipped, unscaled, synced), once per optimizer
  step;
- `on_optimizer_step`: a step the optimizer skipped (fp16 overflow) is recorded, not captured;
- `on_step_end`: `halt_on` anomalies set `control.should_training_stop`;
- `on_log` / `on_evaluate`: metrics at `global_step`, copied (other callbacks mutate the
  dict); the end-of-training totals become run summary values, not series;
- `on_save`: the checkpoint's path and step (`record_model_save`), and `tracer_run.json`
  written into it so that resuming from it continues the same run;
- train end: finish.

HF has no exception event: while `trainer.train()` runs, a run nobody finishes is ended as
"failed" (by the excepthook with the error, or at exit), and a second `train()` on the same
callback first ends an unfinished run as failed. However it ends, its `total_steps` is the
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
from transformers.trainer_callback import TrainerControl, TrainerState
from transformers.training_args import TrainingArguments

from tracer.integrations.adapter import TracerAdapter, scalar_metrics

logger = logging.getLogger(__name__)

CAPTURE_POINT = "hf_on_pre_optimizer_step"
RUN_FILE = "tracer_run.json"
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


class TransformersCallback(TracerAdapter, TrainerCallback):
    """Trace a `transformers.Trainer` run: `callbacks=[TransformersCallback(project=...)]`.

    Keyword arguments are `TracerConfig` settings (`checkpoint_interval`, `halt_on`,
    `storage_path`, ...), checked here so a typo fails before training starts.
    """

    # The TrainerState of the training going on belongs to this process, like the run.
    process_local: ClassVar[dict[str, Callable[[], Any]]] = {
        **TracerAdapter.process_local,
        "_trainer_state": lambda: None,
    }

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        self.init_tracer(project, run_name, config)
        self._trainer_state: Optional[TrainerState] = None

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
            self.run.finish(
                "failed",
                error="the previous trainer.train() ended without"
                " on_train_end (an exception inside training)",
            )
        self._trainer_state = state  # after the previous run ended: it counts that training
        run_config: dict[str, Any] = {
            "training_args": json.loads(args.to_json_string())  # type: ignore[no-untyped-call]
        }
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            run_config["model_config"] = json.loads(json.dumps(model_config.to_dict(), default=str))
        run = self.start_run(
            run_config,
            resume=self._run_to_resume(args, state),
            unfinished="training ended without on_train_end (an exception inside"
            " trainer.train(), or the process exited)",
            completed_steps=self._completed_steps,
        )
        if model is not None:
            run.watch(model, capture_point=CAPTURE_POINT)

    def _completed_steps(self) -> int:
        """The optimizer steps the Trainer has completed, `global_step`: what a run that ends
        without on_train_end (a crash, at exit or at the next train()) stores as total_steps.
        Tracer's own count would include the step that was being trained."""
        state = self._trainer_state
        if state is None:  # a copy of this callback in another process: the run counts
            raise RuntimeError("no TrainerState in this process")
        return int(state.global_step)

    @staticmethod
    def _run_to_resume(args: TrainingArguments, state: TrainerState) -> Optional[str]:
        """The run id saved next to the checkpoint training resumes from, if any."""
        if state.global_step <= 0:
            return None
        candidates = []
        if isinstance(args.resume_from_checkpoint, str):
            candidates.append(args.resume_from_checkpoint)
        candidates.append(os.path.join(args.output_dir or ".", f"checkpoint-{state.global_step}"))
        for directory in candidates:
            try:
                with open(os.path.join(directory, RUN_FILE), encoding="utf-8") as handle:
                    return str(json.load(handle)["run_id"])
            except (OSError, ValueError, KeyError):
                continue
        logger.info("Tracer found no %s for the resumed checkpoint; starting a new run.", RUN_FILE)
        return None

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or not run.active:
            return
        # Close the last optimizer step: finish() closes an open step only when it holds
        # metrics, and its gradient capture would be lost when nothing was logged at it.
        run.log({}, step=state.global_step + 1)
        self.end_run(total_steps=state.global_step)

    # -- steps ------------------------------------------------------------------------------
    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None and self.run.active:
            self.run.log({}, step=state.global_step + 1)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None:
            self.run.capture_gradients()

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
        **kwargs: Any,
    ) -> None:
        run = self.run
        if run is not None and run.active:
            values, _ = scalar_metrics(metrics)
            if values:
                run.log(values, step=state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or not run.active or not run.is_writer:
            return
        directory = os.path.join(args.output_dir or ".", f"checkpoint-{state.global_step}")
        run.record_model_save(directory, step=state.global_step)
        try:
            with open(os.path.join(directory, RUN_FILE), "w", encoding="utf-8") as handle:
                json.dump(
                    {
                        "run_id": run.run_id,
                        "project": run.config.project_name,
                        "run_name": run.run_name,
                    },
                    handle,
                )
        except OSError as error:  # the checkpoint may live elsewhere (save_strategy quirks)
            logger.debug("Tracer could not write %s into %s: %s", RUN_FILE, directory, error)
