"""`loss_plateau`: the loss stopped improving, and whether that is a fault.

A loss that stops improving is usually fine: the run converged, or a decaying learning-rate
schedule made the steps small. It is a fault when the optimizer no longer changes the model:
a learning rate of 0, parameters frozen by mistake, an optimizer that no longer steps. The
loss alone cannot tell these apart, so the detector also reads the learning rate when the run
logs one (a series matching `lr_metrics`: "lr", "learning_rate", Lightning's "lr-Adam", ...).

Flat: no block median (blocks of `block` (20) values) beat the best by `min_delta` (0.1%,
relative) and by `noise_sigmas` (3) standard errors of a block median for `patience` (3)
blocks. Then:
- warning when the logged lr was cut to 0 (in one jump from at least a tenth of its peak: a
  schedule that decays to 0 is not a fault), or when the optimizer changed nothing at any
  step of the last `patience` blocks: the capture's "optimizer_step_skipped" events (a
  backward without an optimizer step, or a GradScaler finding inf every time) and
  "gradients_missing" events (an optimizer step with no gradient on any parameter:
  parameters frozen, a loss cut from the graph, `zero_grad()` before `step()`);
- info otherwise (converged, a decayed lr, or no lr logged): not shown by default. A small
  model converging quickly to its noise floor looks, from the loss alone, exactly like one
  whose parameters stopped moving, so a stall alone is never a warning.

One episode lasts while the loss stays flat (every further flat block extends it; it ends
after `patience` blocks that beat the best), so a frozen run is one report, not one every
few blocks. The verdict waits until the lr series has reached the step (series come in name order,
"lr" after "loss"), so online and offline judge with the same lr values; in a run that logs
no lr it waits for the end of the run, and is judged then with what is known.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple, Optional

from tracer.detection.base import Detector, Finding, finding
from tracer.detection.episodes import Episodes
from tracer.detection.stats import BlockMedians
from tracer.records import EventWrite


class _Stall(NamedTuple):
    series: str
    step: int  # where the plateau was found (a block's last step)
    since: int  # the last step of the best block
    window_start: int  # the first step of the blocks before the best one
    best: float
    latest: float
    blocks: int


class _LearningRate:
    """One lr series: its values where they changed (with the peak up to each change, so a
    verdict never rescans a schedule that changes every step), and how far it was seen."""

    __slots__ = ("changes", "peaks", "seen_until", "values")

    def __init__(self) -> None:
        self.changes: list[int] = []
        self.values: list[float] = []
        self.peaks: list[float] = []  # the largest finite value up to and including each
        self.seen_until = -1

    def feed(self, steps: Sequence[int], values: Sequence[float]) -> None:
        for step, value in zip(steps, values, strict=True):
            if not self.values or value != self.values[-1]:
                peak = self.peaks[-1] if self.peaks else -math.inf
                self.changes.append(step)
                self.values.append(value)
                self.peaks.append(max(peak, value) if value == value else peak)
        if steps:
            self.seen_until = max(self.seen_until, steps[-1])

    def at(self, step: int) -> float:
        index = bisect.bisect_right(self.changes, step) - 1
        return self.values[index] if index >= 0 else math.nan

    def cut_to_zero(self, step: int) -> bool:
        """0 at `step`, reached in one jump from at least a tenth of its peak before (lr set
        to 0), not by a schedule that decayed to 0 (whose last value before 0 is tiny)."""
        index = bisect.bisect_right(self.changes, step) - 1
        if index < 1 or self.values[index] != 0.0:
            return False
        peak = self.peaks[index - 1]
        return peak > -math.inf and self.values[index - 1] >= 0.1 * peak


# Blocks judged as soon as this many wait with no lr series seen: an lr logged that late
# is not waited for (waiting for it kept every block of the run, and finish() judged them all).
NO_LR_WAIT_BLOCKS = 64
_IDLE_EVENTS = ("optimizer_step_skipped", "gradients_missing")
_CONVERGED_HINT = "nothing to do if the run converged; otherwise check the lr schedule"
_NO_LR_VERDICT = ("info", "no learning rate was logged", _CONVERGED_HINT)


class LossPlateauDetector(Detector):
    name = "loss_plateau"
    anomaly_types = ("loss_plateau",)
    defaults = {
        "block": 20,
        "patience": 3,
        "min_delta": 0.001,
        "noise_sigmas": 3.0,
        "lr_metrics": ["lr", "learning_rate", "*/lr", "*/learning_rate", "lr-*", "lr_*"],
    }

    def setup(self) -> None:
        self._blocks: dict[str, BlockMedians] = {}
        self._best: dict[str, tuple[float, int]] = {}  # best median, its block index
        self.episodes = Episodes(self.settings["patience"])
        self._lrs: dict[str, _LearningRate] = {}
        self._waiting: list[tuple[str, int, Optional[_Stall]]] = []  # blocks to judge
        # steps at which the optimizer changed nothing, by event kind (in step order)
        self._idle: dict[str, list[int]] = {kind: [] for kind in _IDLE_EVENTS}

    def _is_lr(self, series: str) -> bool:
        lowered = series.lower()
        return any(fnmatch.fnmatchcase(lowered, p) for p in self.settings["lr_metrics"])

    def wants(self, series: str) -> bool:
        return self.context.is_loss(series) or (
            self.context.is_user_metric(series) and self._is_lr(series)
        )

    def observe(self, series: str, steps: Sequence[int], values: Sequence[float]) -> list[Finding]:
        if not self.context.is_loss(series):
            lr = self._lrs.get(series)
            if lr is None:
                lr = self._lrs[series] = _LearningRate()
            lr.feed(steps, values)
            return self._judge_waiting(final=False)
        blocks = self._blocks.get(series)
        if blocks is None:
            blocks = self._blocks[series] = BlockMedians(self.settings["block"])
        completed = blocks.feed(steps, values)
        first = len(blocks.medians) - len(completed)
        for offset, step in enumerate(completed):
            self._block_done(series, blocks, first + offset, step)
        return self._judge_waiting(final=False)

    def finish(self) -> list[Finding]:
        return self._judge_waiting(final=True)

    def _block_done(self, series: str, blocks: BlockMedians, index: int, step: int) -> None:
        """Queue this block's verdict: calm (a new best beyond noise, or still within
        `patience`) or a stall, judged in order once the lr is known that far."""
        latest = blocks.medians[index]
        best, best_index = self._best.get(series, (math.inf, index))
        # Not below the best: no margin makes it an improvement, and the noise is not needed.
        if best == math.inf or (
            latest < best and latest < best - self._margin(best, blocks, index)
        ):
            self._best[series] = (latest, index)
            self._waiting.append((series, step, None))
            return
        if index - best_index < self.settings["patience"]:
            return
        since = step - (index - best_index) * blocks.size
        self._waiting.append(
            (series, step, _Stall(series, step, since, since - blocks.size + 1, best, latest,
                                  index - best_index))
        )  # fmt: skip

    def _margin(self, best: float, blocks: BlockMedians, index: int) -> float:
        """How far below the best a block median must be to count as an improvement."""
        noise: float = self.settings["noise_sigmas"] * blocks.noise_at(index)
        return max(float(self.settings["min_delta"]) * abs(best), noise)

    def observe_event(self, event: EventWrite) -> list[Finding]:
        steps = self._idle.get(event["kind"])
        if steps is not None and (not steps or event["step"] > steps[-1]):
            steps.append(event["step"])  # one per step, however many models were watched
        return []

    def _idle_throughout(self, stall: _Stall) -> Optional[str]:
        """The event kind that says why the optimizer changed nothing at every step of the
        stall's last `patience` blocks, or None when it did change something (events at later
        steps, which online detection may already have, are not used)."""
        if not any(self._idle.values()):
            return None  # the usual case: no such event at all
        start = stall.step - self.settings["patience"] * self.settings["block"]
        idle: set[int] = set()
        counts = {}
        for kind, steps in self._idle.items():
            first = bisect.bisect_right(steps, start)
            window = steps[first : bisect.bisect_right(steps, stall.step)]
            counts[kind] = len(window)
            idle.update(window)
        if len(idle) < stall.step - start:
            return None
        return max(counts, key=lambda kind: counts[kind])

    def _judge_waiting(self, final: bool) -> list[Finding]:
        """Judge the queued blocks in order, as far as the lr is known (all at the end)."""
        lrs = self._lrs.values()  # no lr series yet: one may still come (name order)
        done = 0
        for series, step, stall in self._waiting:
            if lrs:
                ready = all(lr.seen_until >= step for lr in lrs)
            else:  # a run that logs no lr: judge once it is plainly not coming, so the queue
                ready = len(self._waiting) - done > NO_LR_WAIT_BLOCKS  # (and finish) stay short
            if not (final or ready):
                break
            done += 1
            if stall is None:
                self.episodes.calm(series)
                continue
            severity, why, hint = self._verdict(stall)
            self.episodes.hit(  # the finding is built only when the episode opens or worsens
                "loss_plateau",
                series,
                step,
                partial(self._stall_finding, stall, severity, why, hint),
                severity=severity,
            )
        del self._waiting[:done]
        if final:
            self.episodes.close_all()
        return self.episodes.drain()

    def _stall_finding(self, stall: _Stall, severity: str, why: str, hint: str) -> Finding:
        return finding(
            stall.step,
            "loss_plateau",
            severity,
            stall.series,
            f"{stall.series} has not improved on {stall.best:.4g} (reached by step"
            f" {stall.since}) for {stall.blocks} blocks of {self.settings['block']}"
            f" steps: {why}",
            value=stall.latest,
            baseline=stall.best,
            threshold=stall.best * (1 - self.settings["min_delta"]),
            hint=hint,
        )

    def _verdict(self, stall: _Stall) -> tuple[str, str, str]:
        """(severity, why, what to try) for a stalled loss, from the lr and skipped steps."""
        if not self._lrs and not any(self._idle.values()):
            return _NO_LR_VERDICT  # a converged run that logs no lr: every block, same verdict
        known = [lr for lr in self._lrs.values() if lr.seen_until >= stall.step]
        now = [lr.at(stall.step) for lr in known]
        then = [lr.at(stall.window_start) for lr in known]
        if known and all(lr.cut_to_zero(stall.step) for lr in known):
            return (
                "warning",
                "the learning rate is 0",
                "set a learning rate above 0 (a scheduler that reached 0, or lr=0 in a group)",
            )
        idle = self._idle_throughout(stall)
        recent = stall.step - self.settings["patience"] * self.settings["block"] + 1
        if idle == "optimizer_step_skipped":
            return (
                "warning",
                f"the optimizer skipped every step since step {recent} at least",
                "check that optimizer.step() runs and is not skipped (a GradScaler that finds"
                " inf at every step skips them all)",
            )
        if idle == "gradients_missing":
            return (
                "warning",
                f"no parameter has had a gradient at an optimizer step since step {recent} at"
                " least",
                "check that the parameters require grad (not frozen by mistake), that the loss"
                " is not detached from the graph, and that zero_grad() comes before backward()"
                " rather than between backward() and step()",
            )
        decayed = any(b < a for a, b in zip(then, now, strict=True) if a == a and b == b)
        if not known:
            return _NO_LR_VERDICT
        why = "the learning rate decayed" if decayed else "the run may have converged"
        return "info", why, _CONVERGED_HINT
