"""Scoring one run: episodes, whether the fault was found and when, what it explains.

Anomalies are scored as EPISODES. Stored anomalies that carry `end_step` are episodes
already (one per row); older storage keeps one row per step, so rows of the same (type,
subject) whose steps are within `MERGE_GAP` of the previous one are merged here, and every
figure is over episodes either way. "Shown" = severity warning or critical (shown by
default); info episodes count neither as detections nor as false alarms, only apart.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .scenarios import Scenario
from .training import RunResult

SHOWN = ("warning", "critical")
RANK = {"info": 0, "warning": 1, "critical": 2}
MERGE_GAP = 50
CLIMB_BEFORE = 100  # losses before the fault that set the reference level
CLIMB_AHEAD = 10  # rolling median of the next 10 logged losses
CLIMB_SIGMAS = 3.0


@dataclass(frozen=True)
class Episode:
    """One anomaly episode: `anomaly_type` about `subject` from `start` to `end`."""

    anomaly_type: str
    subject: str
    start: int
    end: int
    severity: str
    count: int

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.anomaly_type, self.start, self.subject)


def episodes(rows: Iterable[Mapping[str, Any]]) -> list[Episode]:
    """Episodes of `rows` (stored anomaly dicts), in start order."""
    rows = sorted(rows, key=lambda a: (int(a["step"]), a["anomaly_type"], str(a["subject"])))
    result: list[Episode] = []
    latest: dict[tuple[str, str], int] = {}  # (type, subject) -> index of its last episode
    for row in rows:
        kind, subject, step = row["anomaly_type"], str(row["subject"]), int(row["step"])
        if "end_step" in row:  # episodes already
            end, count = int(row.get("end_step") or step), int(row.get("count") or 1)
            result.append(Episode(kind, subject, step, end, row["severity"], count))
            continue
        index = latest.get((kind, subject))
        last = result[index] if index is not None else None
        if index is not None and last is not None and step - last.end <= MERGE_GAP:
            severity = max(last.severity, row["severity"], key=lambda s: RANK.get(s, 0))
            result[index] = Episode(kind, subject, last.start, step, severity, last.count + 1)
        else:
            latest[(kind, subject)] = len(result)
            result.append(Episode(kind, subject, step, step, row["severity"], 1))
    return sorted(result, key=lambda e: (e.start, e.anomaly_type, e.subject))


def shown(items: Iterable[Episode]) -> list[Episode]:
    return [e for e in items if e.severity in SHOWN]


def climb_onset(losses: Sequence[float], onset: int) -> int:
    """The first step >= `onset` at which the median of the next `CLIMB_AHEAD` losses exceeds
    median + 3 robust sigmas (1.4826 MAD) of the `CLIMB_BEFORE` losses before the onset; a
    non-finite loss counts as +inf. `onset` itself when the loss never climbs so."""
    before = [v for v in losses[max(0, onset - CLIMB_BEFORE) : onset] if v == v]
    if not before:
        return onset
    centre = statistics.median(before)
    sigma = 1.4826 * statistics.median(abs(v - centre) for v in before)
    limit = centre + CLIMB_SIGMAS * sigma
    clean = [v if v == v and abs(v) != float("inf") else float("inf") for v in losses]
    for step in range(onset, len(clean) - CLIMB_AHEAD + 1):
        if statistics.median(clean[step : step + CLIMB_AHEAD]) > limit:
            return step
    return onset


@dataclass
class Score:
    """How one run scored. `reference` is the step time to detect counts from (the onset, or
    the climb onset for divergence); `deadline` the last step a detection counts."""

    scenario: str
    family: str
    split: str
    interval: int
    steps: int = 0
    seconds: float = 0.0
    onset: Optional[int] = None
    reference: Optional[int] = None
    deadline: Optional[int] = None
    found_online: bool = False
    found_offline: bool = False
    first_type: str = ""
    first_start: Optional[int] = None
    ttd: Optional[int] = None
    late: bool = False
    shown_online: int = 0
    shown_offline: int = 0
    explained_online: int = 0
    explained_offline: int = 0
    info_online: int = 0
    agree: bool = True
    loss_first: Optional[float] = None
    loss_last: Optional[float] = None
    skipped: Optional[str] = None
    error: Optional[str] = None
    episodes_online: list[dict[str, Any]] = field(default_factory=list)
    only_online: list[tuple[str, int, str]] = field(default_factory=list)
    only_offline: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        """Ran and scored (not skipped, not crashed)."""
        return self.skipped is None and self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def explained(scenario: Scenario, interval: int, episode: Episode) -> bool:
    """Whether `episode` is a consequence of the scenario's injected fault."""
    fault = scenario.fault
    if fault is None or episode.start < fault.onset:
        return False
    for rule in scenario.explains:
        if rule.types is not None and episode.anomaly_type not in rule.types:
            continue
        if rule.steps is None or episode.start <= (
            fault.onset + rule.steps + rule.intervals * interval
        ):
            return True
    return False


def _mean(values: Sequence[float]) -> Optional[float]:
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    return statistics.fmean(finite) if finite else None


def score(scenario: Scenario, result: RunResult) -> Score:
    """Score `result`, a run of `scenario`."""
    out = Score(
        scenario.name,
        scenario.family,
        scenario.split,
        result.interval,
        steps=result.steps_run,
        seconds=result.seconds,
        skipped=result.skipped,
        error=result.error,
    )
    if not out.counted:
        return out
    span = min(100, len(result.losses) // 4) or 1
    out.loss_first, out.loss_last = _mean(result.losses[:span]), _mean(result.losses[-span:])
    online_all, offline_all = episodes(result.online), episodes(result.offline)
    online, offline = shown(online_all), shown(offline_all)
    out.episodes_online = [asdict(e) for e in online]
    out.shown_online, out.shown_offline = len(online), len(offline)
    out.info_online = len(online_all) - len(online)
    keys_on, keys_off = {e.key for e in online}, {e.key for e in offline}
    out.agree = keys_on == keys_off
    out.only_online, out.only_offline = sorted(keys_on - keys_off), sorted(keys_off - keys_on)
    out.explained_online = sum(explained(scenario, result.interval, e) for e in online)
    out.explained_offline = sum(explained(scenario, result.interval, e) for e in offline)
    fault = scenario.fault
    if fault is None:
        return out
    out.onset = fault.onset
    out.reference = (
        climb_onset(result.losses, fault.onset) if scenario.from_climb else (fault.onset)
    )
    if scenario.window is None:
        out.deadline = result.steps_run
    else:
        out.deadline = (
            out.reference + scenario.window + (scenario.window_intervals * result.interval)
        )

    def hits(items: Sequence[Episode]) -> list[Episode]:
        return [
            e for e in items if e.anomaly_type in scenario.expect_types and e.start >= fault.onset
        ]

    in_time = [e for e in hits(online) if out.deadline is not None and e.start <= out.deadline]
    out.found_online = bool(in_time)
    out.found_offline = any(
        out.deadline is not None and e.start <= out.deadline for e in hits(offline)
    )
    candidates = hits(online)
    if candidates:
        first = min(candidates, key=lambda e: e.start)
        out.first_type, out.first_start = first.anomaly_type, first.start
        out.ttd = first.start - out.reference
        out.late = not out.found_online
    return out
