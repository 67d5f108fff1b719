"""The finding: what a detector reports, one anomaly episode at a time."""

from __future__ import annotations

from typing import TypedDict

from tracer.records import SEVERITIES

__all__ = ["SEVERITIES", "Finding", "finding"]


class _FindingCore(TypedDict):
    step: int
    anomaly_type: str
    severity: str
    subject: str  # the metric or layer concerned ("" when it is the run as a whole)
    value: float  # what was observed
    baseline: float  # what was expected (NaN when there is no baseline)
    threshold: float  # the limit that was crossed (NaN when not a threshold test)
    message: str


class Finding(_FindingCore, total=False):
    """One anomaly episode as a detector reports it. The episode fields are optional (a
    detector that reports single steps leaves them out: the runner fills `end_step` = `step`,
    `count` = 1, `open` = False, `hint` = the type's default advice)."""

    end_step: int  # the last step the condition was seen at
    count: int  # observations in the episode (steps, captures or checkpoints)
    open: bool  # the condition may still be going on
    hint: str  # one line: what to try


def finding(
    step: int,
    anomaly_type: str,
    severity: str,
    subject: str,
    message: str,
    *,
    value: float = float("nan"),
    baseline: float = float("nan"),
    threshold: float = float("nan"),
    hint: str = "",
) -> Finding:
    found: Finding = {
        "step": int(step),
        "anomaly_type": anomaly_type,
        "severity": severity,
        "subject": subject,
        "value": float(value),
        "baseline": float(baseline),
        "threshold": float(threshold),
        "message": message,
    }
    if hint:
        found["hint"] = hint
    return found
