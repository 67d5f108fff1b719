"""The Python warnings that signal a silent training bug, recorded as run events.

Some silent bugs are announced by a warning that scrolls away in a long log: torch's
"Using a target size ... that is different to the input size" (an MSE or L1 loss whose
target broadcasts, `[B]` against `[B, 1]`: the model learns the targets' mean), and
"Detected call of `lr_scheduler.step()` before `optimizer.step()`" (the first value of the
schedule skipped). While the run is open, `warnings.showwarning` is chained: the warning is
still shown as before, and one matching a `SIGNATURES` entry becomes the event
"training_warning" (detector `training_warning`). The hook is removed at finish, and left
alone if something replaced it meanwhile. Only warnings Python shows reach it (the default
filter shows each once per place). Off with `capture_warnings=False`.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any, Optional

from tracer.capture.collector import Collector
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.handles import RunHandle
    from tracer.records import EventWrite

# message fragment -> what it is (the event's "bug")
SIGNATURES = {
    "that is different to the input size": "loss_broadcast",
    "lr_scheduler.step()` before `optimizer.step()": "scheduler_order",
}


class WarningCapture(Collector):
    name = "warnings"

    def __init__(self, run: RunHandle) -> None:
        self._run = run
        self._previous: Any = warnings.showwarning
        self._lock = threading.Lock()
        warnings.showwarning = self._show

    def _show(
        self,
        message: Any,
        category: Any,
        filename: str,
        lineno: int,
        file: Optional[Any] = None,
        line: Optional[str] = None,
    ) -> None:
        try:
            self._record(str(message), getattr(category, "__name__", ""), filename, lineno)
        finally:
            self._previous(message, category, filename, lineno, file, line)

    def _record(self, text: str, category: str, filename: str, lineno: int) -> None:
        if not self._run.active:
            return
        bug = next((b for fragment, b in SIGNATURES.items() if fragment in text), None)
        if bug is None:
            return
        event: EventWrite = {
            "step": self._run.current_step,
            "kind": "training_warning",
            "data": {
                "bug": bug,
                "message": text[:500],
                "category": category,
                "where": f"{filename}:{lineno}",
            },
        }
        self._run.submit_background(lambda: Collected([], [event]))

    def close(self) -> None:
        with self._lock:
            if warnings.showwarning == self._show:
                warnings.showwarning = self._previous


def warning_collector(run: RunHandle) -> Optional[Collector]:
    """Factory registered by the built-in capture plugin; None when `capture_warnings` is off."""
    return WarningCapture(run) if run.config.capture_warnings else None
