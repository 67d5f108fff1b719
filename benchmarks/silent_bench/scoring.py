"""Scoring the silent-bug runs, and the markdown tables.

A bug run's report is its shown episodes (severity warning or critical, as the detection
benchmark counts them). The bug is CAUGHT when one of them starts within `WINDOW` steps of
the bug's onset (at or after it) and its (type, subject) is not among its twin's shown
episodes: a report the clean twin also gets says nothing about the bug. Every shown episode
of a twin or of an extra clean run is a FALSE ALARM. Online (stored by the writer thread)
and offline (replayed from storage) are scored alike and compared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .scenarios import BUG_CLASSES, WINDOW, Scenario
from .training import RunResult

SHOWN = ("warning", "critical")
CATCH_TARGET = 0.8


def _shown(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [a for a in rows if a["severity"] in SHOWN]


def _keys(rows: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(a["anomaly_type"], str(a["subject"])) for a in _shown(rows)}


def _episode_keys(rows: Sequence[Mapping[str, Any]]) -> set[tuple[str, int, str]]:
    return {(a["anomaly_type"], int(a["step"]), str(a["subject"])) for a in _shown(rows)}


@dataclass
class BugScore:
    scenario: Scenario
    caught_online: bool = False
    caught_offline: bool = False
    first: str = ""  # type@step (subject) of the first catching report
    delay: Optional[int] = None
    reports: list[str] = field(default_factory=list)  # the bug run's shown episodes
    agree: bool = True
    error: Optional[str] = None


@dataclass
class CleanScore:
    scenario: Scenario
    alarms: list[str] = field(default_factory=list)
    agree: bool = True
    error: Optional[str] = None


def _catching(scenario: Scenario, rows: Sequence[Mapping[str, Any]], twin: set[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return sorted(
        (
            a
            for a in _shown(rows)
            if scenario.onset <= int(a["step"]) <= scenario.onset + WINDOW
            and (a["anomaly_type"], str(a["subject"])) not in twin
        ),
        key=lambda a: int(a["step"]),
    )


def _label(row: Mapping[str, Any]) -> str:
    subject = f" {row['subject']}" if row["subject"] else ""
    return f"{row['anomaly_type']}@{row['step']}{subject}"


def score_bug(scenario: Scenario, bug: RunResult, twin: RunResult) -> BugScore:
    out = BugScore(scenario, error=bug.error or twin.error)
    if out.error:
        return out
    twin_keys = _keys(twin.online)
    online = _catching(scenario, bug.online, twin_keys)
    offline = _catching(scenario, bug.offline, _keys(twin.offline))
    out.caught_online, out.caught_offline = bool(online), bool(offline)
    if online:
        out.first = _label(online[0])
        out.delay = int(online[0]["step"]) - scenario.onset
    out.reports = [_label(a) for a in sorted(_shown(bug.online), key=lambda a: int(a["step"]))]
    out.agree = _episode_keys(bug.online) == _episode_keys(bug.offline)
    return out


def score_clean(scenario: Scenario, result: RunResult) -> CleanScore:
    out = CleanScore(scenario, error=result.error)
    if result.error:
        return out
    out.alarms = [_label(a) for a in sorted(_shown(result.online), key=lambda a: int(a["step"]))]
    out.agree = _episode_keys(result.online) == _episode_keys(result.offline)
    return out


def _short(items: Sequence[str], limit: int = 3) -> str:
    if not items:
        return "-"
    return ", ".join(items[:limit]) + (f", +{len(items) - limit}" if len(items) > limit else "")


def bug_table(scores: Sequence[BugScore]) -> list[str]:
    lines = [
        "| scenario | bug | split | onset | caught online / offline | first catching report"
        " | delay | bug run's reports | online = offline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        sc = s.scenario
        head = f"| {sc.name} | {BUG_CLASSES[sc.bug]} | {sc.split} | {sc.onset}"
        if s.error:
            lines.append(f"{head} | **CRASH**: {s.error} | | | | |")
            continue
        yes = {True: "yes", False: "**no**"}
        lines.append(
            f"{head} | {yes[s.caught_online]} / {yes[s.caught_offline]} | {s.first or '-'}"
            f" | {'-' if s.delay is None else s.delay} | {_short(s.reports)}"
            f" | {yes[s.agree]} |"
        )
    return lines


def clean_table(scores: Sequence[CleanScore]) -> list[str]:
    lines = [
        "| clean run | split | false alarms | online = offline |",
        "|---|---|---|---|",
    ]
    yes = {True: "yes", False: "**no**"}
    for s in scores:
        if s.error:
            lines.append(f"| {s.scenario.name} | {s.scenario.split} | **CRASH**: {s.error} | |")
            continue
        lines.append(
            f"| {s.scenario.name} | {s.scenario.split} | {len(s.alarms)}: {_short(s.alarms, 4)}"
            f" | {yes[s.agree]} |"
        )
    return lines


def summary(bugs: Sequence[BugScore], clean: Sequence[CleanScore]) -> tuple[list[str], bool]:
    """One row per half: caught (online and offline), false alarms, by type."""
    lines = [
        "| half | bug scenarios caught within 50 steps, online | offline | false alarms on"
        " clean runs (twins + extra) | alarm types | online = offline | crashes |",
        "|---|---|---|---|---|---|---|",
    ]
    passed = True
    for split in ("tune", "held"):
        mine = [s for s in bugs if s.scenario.split == split]
        runs = [s for s in clean if s.scenario.split == split]
        online = sum(s.caught_online for s in mine)
        offline = sum(s.caught_offline for s in mine)
        alarms = [a for s in runs for a in s.alarms]
        kinds = Counter(a.split("@")[0] for a in alarms)
        agree = sum(s.agree for s in mine) + sum(s.agree for s in runs)
        crashes = sum(1 for s in [*mine, *runs] if s.error)
        passed = passed and min(online, offline) >= CATCH_TARGET * len(mine) and not alarms
        lines.append(
            f"| {split} | {online}/{len(mine)} ({online / max(1, len(mine)):.0%}) |"
            f" {offline}/{len(mine)} | {len(alarms)} on {len(runs)} runs"
            f" | {', '.join(f'{k} {n}' for k, n in kinds.most_common()) or '-'}"
            f" | {agree}/{len(mine) + len(runs)} | {crashes} |"
        )
    return lines, passed
