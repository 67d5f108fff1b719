"""`LightningCallback`: maps a Lightning `Trainer` (either namespace) onto one Tracer run.

- fit start (global zero only): a run, or the one saved in the checkpoint being resumed
  (the callback's state holds the run id); config = the module's hyperparameters; the
  LightningModule watched, with its optimizer for the silent-bug probe (of several, the one
  holding all its trainable parameters, else no probe: `_probed_optimizer`);
- `on_before_optimizer_step`: the Tracer step becomes `global_step + 1` (the optimizer step
  being taken) and gradients are captured: unscaled, synced, before clipping, once per
  optimizer step whatever `accumulate_grad_batches`; with `on_nonfinite="skip"`, the step
  is skipped there when a gradient is non-finite on any rank (`run.skip_nonfinite_step`;
  Lightning clips after this hook, which finds no gradient then), except under 16-bit
  mixed precision, whose GradScaler skips such a step itself;
- `on_train_batch_end`: when `global_step` advanced, what the module logged
  (`trainer.callback_metrics`) is stored at `global_step`; tensors are handed over as they
  are, so nothing is read back to the host per batch; `halt_on` sets `trainer.should_stop`;
- validation epoch end (not the sanity check): validation metrics at `global_step`;
- model checkpoints written by `ModelCheckpoint` callbacks: path and step recorded;
- `on_exception`: the run is marked failed; the stage's teardown (after the module's own end
  hooks): finish with `total_steps = global_step`.

Stages and runs. Every value is stored at `trainer.global_step`, the optimizer steps done (as
`TracerLogger` does). A second `fit()` that continues a Trainer (`global_step` above 0) and a
`validate()` or `test()` after a fit continue the callback's last run when it finished, and
finish it again; a stage with no such run starts a run of its own, its config naming the
stage (`"stage": "test"`). A failed run is never continued. `predict()` stores nothing:
Lightning does not let a module log in it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from tracer.integrations.adapter import TracerAdapter, scalar_metrics
from tracer_lightning.logger import TracerLogger
from tracer_lightning.namespaces import bases

logger = logging.getLogger(__name__)

CAPTURE_POINT = "lightning_on_before_optimizer_step"
_CallbackBases = bases("Callback")


def _is_validation(metric: str) -> bool:
    return metric.startswith("val")


def _hyperparameters(module: Any) -> dict[str, Any]:
    hparams = getattr(module, "hparams", None)
    try:
        return {str(k): v for k, v in dict(hparams or {}).items()}
    except (TypeError, ValueError):
        return {}


def _probed_optimizer(trainer: Any, pl_module: Any) -> Any:
    """The optimizer whose steps the silent-bug probe samples: the Trainer's only one, or of
    several (manual optimization: a GAN's generator and discriminator) the one holding all
    of the module's trainable parameters; None (no probe) when none does, since the probe
    would take the parameters another optimizer trains for left out."""
    optimizers = list(getattr(trainer, "optimizers", []) or [])
    if len(optimizers) == 1:
        return optimizers[0]
    trainable = {id(p) for p in pl_module.parameters() if p.requires_grad}
    for optimizer in optimizers:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if trainable <= held:
            return optimizer
    if optimizers:
        logger.info(
            "Tracer: none of the %d optimizers holds all of %s's parameters; the silent-bug"
            " probe is off for it (gradient capture goes on).",
            len(optimizers),
            type(pl_module).__name__,
        )
    return None


class LightningCallback(TracerAdapter, *_CallbackBases):  # type: ignore[misc]
    """Trace a Lightning fit: `Trainer(callbacks=[LightningCallback(project=...)])`.

    Keyword arguments are `TracerConfig` settings, checked here so a typo fails at once.
    """

    def __init__(self, project: str, run_name: Optional[str] = None, **config: Any) -> None:
        super().__init__()
        self.init_tracer(project, run_name, config)
        self._resume: Optional[str] = None
        self._rewind_at_train_start = False
        self._continuable = False  # the last run finished: a later stage may continue it
        self._logged_step = -1
        self._saved_paths: set[tuple[str, float]] = set()

    # -- state kept in Lightning checkpoints --------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run.run_id} if self.run is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = state_dict.get("run_id")

    # -- start and end ----------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # Every rank: global zero writes the run; other ranks get a follower that sends their
        # gradient summaries (tracer.capture.gradients.ranks), so the same hooks run on all ranks.
        shared = next(
            (
                lg.run
                for lg in getattr(trainer, "loggers", [])
                if isinstance(lg, TracerLogger) and lg.run is not None
            ),
            None,
        )
        if shared is not None:  # a TracerLogger on the same Trainer already started the run
            self.run = shared
            shared.status_at_exit = "failed"
            shared.error_at_exit = "fit ended without on_fit_end"
            shared.completed_steps = lambda: int(trainer.global_step)
        else:
            self._begin(trainer, pl_module, "fit", continuing=trainer.global_step > 0)
        assert self.run is not None
        for lg in getattr(trainer, "loggers", []):
            if isinstance(lg, TracerLogger):
                lg.attach(self.run)
        self._logged_step = trainer.global_step
        self.run.watch(
            pl_module, _probed_optimizer(trainer, pl_module), capture_point=CAPTURE_POINT
        )
        wrapped = getattr(trainer.strategy, "model", None)
        if wrapped is not None and wrapped is not pl_module:  # DDP: each rank's own norm
            self.run.attach_data_parallel(wrapped)

    def _begin(self, trainer: Any, pl_module: Any, stage: str, continuing: bool) -> None:
        """Start the stage's run: the checkpoint's, this callback's last finished run when
        `continuing`, or a new one (whose id a TracerLogger on the Trainer already gave
        Lightning as its version)."""
        resume, self._resume = self._resume, None  # a checkpoint's run id, used once
        self._rewind_at_train_start = resume is not None
        if resume is None and continuing and self._continuable and self.run is not None:
            resume = self.run.run_id
        for lg in getattr(trainer, "loggers", []):
            if isinstance(lg, TracerLogger) and lg.run is None:
                self._planned_run_id = lg.planned_run_id
        config = _hyperparameters(pl_module)
        if stage != "fit":
            config["stage"] = stage
        self._continuable = False
        self.start_run(
            config,
            resume=resume,
            unfinished=f"{stage} ended without its end event",
            completed_steps=lambda: int(trainer.global_step),
        )

    def _end(self, trainer: Any) -> None:
        run = self.run
        if run is None or not run.active:
            return
        self.end_run(total_steps=trainer.global_step)
        self._continuable = not run.should_stop

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Resumed from a checkpoint: Lightning has restored its step by now (not yet at fit
        start), and what the run stored after that step is trained again: drop it."""
        if self._rewind_at_train_start and self.run is not None:
            self._rewind_at_train_start = False
            self.run.rewind(int(trainer.global_step))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        run = self.run
        if run is None or not run.active:
            return
        self._record_saves(trainer)
        self._log_step_metrics(trainer)
        run.log({}, step=trainer.global_step + 1)  # closes the last optimizer step

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """The stage is over: end its run. Not at `on_fit_end` (or validation/test end):
        Lightning calls the module's own end hook after the callbacks', and an exception
        there must still fail the run (`on_exception` comes before teardown)."""
        if stage in ("fit", "validate", "test"):
            self._end(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.fail_run(exception)
        self._continuable = False

    # -- validate, test and predict outside fit ---------------------------------------------
    def _stage_outside_fit(self, trainer: Any) -> Optional[str]:
        stage = getattr(getattr(trainer.state, "fn", None), "value", None)
        return stage if stage in ("validate", "test") else None

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        stage = self._stage_outside_fit(trainer)
        if stage is not None and not self.active:
            self._begin(trainer, pl_module, stage, continuing=True)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self.on_validation_start(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        run = self.run
        if run is not None and run.active:
            values, _ = scalar_metrics(dict(trainer.callback_metrics))
            if values:
                run.log(values, step=trainer.global_step)

    # -- steps ------------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        run = self.run
        if run is None or not run.active:
            return
        run.log({}, step=trainer.global_step + 1)
        run.capture_gradients()
        if getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is None:
            run.skip_nonfinite_step(optimizer)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        run = self.run
        if run is None or not run.active:
            return
        if trainer.global_step != self._logged_step:
            self._log_step_metrics(trainer)
            self._record_saves(trainer)
        if run.should_stop:
            trainer.should_stop = True

    def _log_step_metrics(self, trainer: Any) -> None:
        run = self.run
        if run is None or trainer.global_step == self._logged_step:
            return
        self._logged_step = trainer.global_step
        values, _ = scalar_metrics(
            dict(trainer.callback_metrics), lambda key: not _is_validation(key)
        )
        if values:
            run.log(values, step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        run = self.run
        if run is None or not run.active or trainer.sanity_checking:
            return
        outside_fit = self._stage_outside_fit(trainer) is not None
        keep = None if outside_fit else _is_validation  # in fit, train metrics are per step
        values, _ = scalar_metrics(dict(trainer.callback_metrics), keep)
        if values:
            run.log(values, step=trainer.global_step)
        self._record_saves(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.active:
            self._record_saves(trainer)

    def _record_saves(self, trainer: Any) -> None:
        """Note files that ModelCheckpoint callbacks wrote since the last look."""
        run = self.run
        if run is None:
            return
        for checkpoint in getattr(trainer, "checkpoint_callbacks", []):
            # ModelCheckpoint runs after every other callback, so a save is often seen one
            # step late: record it at the step the checkpoint itself says it was written.
            saved_at = getattr(checkpoint, "_last_global_step_saved", None)
            step = saved_at if isinstance(saved_at, int) and saved_at >= 0 else trainer.global_step
            for path in (
                getattr(checkpoint, "last_model_path", ""),
                getattr(checkpoint, "best_model_path", ""),
            ):
                try:  # a path written again (last.ckpt) is a new save
                    key = (path, os.path.getmtime(path)) if path else None
                except OSError:
                    key = None
                if key is not None and key not in self._saved_paths:
                    self._saved_paths.add(key)
                    run.record_model_save(path, step=step)
