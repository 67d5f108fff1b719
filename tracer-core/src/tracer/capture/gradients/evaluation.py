"""Checks of the watched model's evaluation passes (forwards with gradients disabled), run
from the probe's forward pre-hook (and, for the dropout check, a one-shot forward hook):

- "evaluation_in_train_mode": an evaluation forward while the model is in train() mode
  (dropout on, batch norm updating its running statistics); only for models holding dropout
  or batch norm. Two attribute reads per forward.
- "dropout_in_eval": an evaluation forward in eval() mode during which a functional dropout
  ran with `training=True` (`F.dropout(x, p)` without `training=self.training`: the default
  is True, so eval() does not turn it off). Seen through a `TorchFunctionMode` held for the
  span of one forward, the first evaluation forward after training steps at most once per
  `EVENT_GAP` optimizer steps: every torch call in that one forward pays a Python dispatch,
  no other forward does. Not for a `torch.compile`d model (a mode would recompile it).

Each finding is an event sent at most once per `EVENT_GAP` optimizer steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from tracer.records import Collected

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

EVENT_GAP = 100  # optimizer steps between two events of one kind
DROPOUTS = (
    "dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
)


def _dropout_functions() -> set[Any]:
    import torch.nn.functional as functional

    return {getattr(functional, name) for name in DROPOUTS if hasattr(functional, name)}


class _DropoutWatch:
    """A torch function mode that notes a dropout called with training on and p > 0."""

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        functions = _dropout_functions()
        watch = self
        self.seen: Optional[str] = None
        self.handle: Any = None  # the one-shot forward hook that ends the watch

        class Mode(TorchFunctionMode):
            def __torch_function__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                kwargs = kwargs or {}
                if func in functions and watch.seen is None:
                    p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
                    training = kwargs.get("training", args[2] if len(args) > 2 else True)
                    if training and p > 0:
                        watch.seen = getattr(func, "__name__", "dropout")
                return func(*args, **kwargs)

        self.mode = Mode()


class EvaluationChecks:
    """The evaluation checks of one watched model. `steps` reads the probe's count of
    optimizer steps (the clock of the event gaps)."""

    def __init__(
        self, run: RunHandle, model: Any, sensitive: bool, steps: Callable[[], int]
    ) -> None:
        self._run = run
        self._model = model
        self._sensitive = sensitive
        self._steps = steps
        self._last_train_mode_event = -EVENT_GAP
        self._last_dropout_check = -EVENT_GAP
        self._watching: Optional[_DropoutWatch] = None
        # torch.compile guards on the function-mode stack: a mode would recompile the model
        self._compiled = hasattr(model, "_orig_mod")

    def on_forward(self) -> None:
        """The forward pre-hook, for a forward with gradients disabled."""
        model = self._model
        now = self._steps()
        if model.training:
            if self._sensitive and now - self._last_train_mode_event >= EVENT_GAP:
                self._last_train_mode_event = now
                self._send("evaluation_in_train_mode", {})
            return
        if (
            self._watching is None
            and now > 0
            and now - self._last_dropout_check >= EVENT_GAP
            and not self._compiled
        ):
            self._last_dropout_check = now
            watch = _DropoutWatch()
            # one-shot, and called even when the forward raises: the mode must not outlive it
            watch.handle = model.register_forward_hook(self._forward_done, always_call=True)
            watch.mode.__enter__()  # type: ignore[no-untyped-call]
            self._watching = watch

    def _forward_done(self, module: Any, args: Any, output: Any) -> None:
        try:
            self.after_forward()
        except Exception:  # a torch hook: never let it reach the training loop
            logger.exception("Tracer's dropout check failed; evaluation goes on.")

    def after_forward(self) -> None:
        """The end of the watched forward, or of the run: ends a dropout watch."""
        watch, self._watching = self._watching, None
        if watch is None:
            return
        watch.handle.remove()
        watch.mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        if watch.seen is not None:
            self._send("dropout_in_eval", {"function": watch.seen})

    def _send(self, kind: str, details: dict[str, object]) -> None:
        event: EventWrite = {
            "step": self._run.current_step,
            "kind": kind,
            "data": {"model": type(self._model).__name__, **details},
        }
        self._run.submit_background(lambda: Collected([], [event]))
