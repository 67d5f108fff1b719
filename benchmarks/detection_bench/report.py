"""The markdown tables of the detection benchmark, and the pass/fail verdicts.

`scenario_table` lists every run; `summary` aggregates one (split, interval) half: recall
and time to detect per family, precision over episodes, false alarms per 1,000 healthy
steps, online = offline agreement and crashes, each beside its target.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Optional

from .scenarios import FAULT_FAMILIES, HEALTHY, HEALTHY_LONG
from .scoring import Score

RECALL_TARGET = 0.95
PRECISION_TARGET = 0.95
FALSE_ALARM_TARGET = 0.2  # shown episodes per 1,000 healthy steps
CRASH_TARGET = 0
TTD_TARGETS = {"explosion": 1, "nan_inf": 1, "spike": 1, "divergence": 20, "memory_leak": 100}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _short(items: Sequence[dict[str, object]], limit: int = 4) -> str:
    shown = [f"{e['anomaly_type']}@{e['start']}" for e in items[:limit]]
    return ", ".join(shown) + (f", +{len(items) - limit}" if len(items) > limit else "")


def _loss(score: Score) -> str:
    if score.loss_first is None or score.loss_last is None:
        return "-"
    return f"{score.loss_first:.3g} -> {score.loss_last:.3g}"


def scenario_table(scores: Sequence[Score]) -> list[str]:
    """One row per run: the fault, whether and when it was found, the shown episodes."""
    lines = [
        "| scenario | family | split | interval | onset (ref) | found online / offline"
        " | first detecting type | time to detect | shown episodes | explained | info"
        " | online = offline | loss first -> last 100 | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        head = f"| {s.scenario} | {s.family} | {s.split} | {s.interval}"
        if s.skipped or s.error:
            why = f"skipped: {s.skipped}" if s.skipped else f"**CRASH**: {s.error}"
            lines.append(f"{head} | {why} | | | | | | | | | |")
            continue
        if s.onset is None:
            onset = found = first = ttd = "-"
        else:
            onset = str(s.onset) + (f" ({s.reference})" if s.reference != s.onset else "")
            found = f"{_yes(s.found_online)} / {_yes(s.found_offline)}"
            first = s.first_type or "-"
            ttd = "-" if s.ttd is None else f"{s.ttd}{' (late)' if s.late else ''}"
        listed = f"{s.shown_online}" + (
            f": {_short(s.episodes_online)}" if s.onset is None and s.shown_online else ""
        )
        explained = "-" if s.onset is None else f"{s.explained_online}/{s.shown_online}"
        lines.append(
            f"{head} | {onset} | {found} | {first} | {ttd} | {listed} | {explained}"
            f" | {s.info_online} | {_yes(s.agree)} | {_loss(s)} | {s.seconds:.1f} |"
        )
    return lines


def _ttd_figure(values: Sequence[int]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):g} / {max(values)}"


def _rate(count: int, steps: int) -> float:
    return 1000.0 * count / steps if steps else 0.0


def _types(scores: Sequence[Score]) -> str:
    counts: Counter[str] = Counter()
    for s in scores:
        counts.update(str(e["anomaly_type"]) for e in s.episodes_online)
    return ", ".join(f"{kind} {n}" for kind, n in counts.most_common()) or "-"


def summary(scores: Sequence[Score], split: str, interval: int) -> tuple[list[str], bool]:
    """The summary tables of one half at one interval, and whether every target was met."""
    mine = [s for s in scores if s.split == split and s.interval == interval]
    counted = [s for s in mine if s.counted]
    faulty = [s for s in counted if s.onset is not None]
    passed = True
    lines = [
        f"#### {split} half, checkpoint_interval={interval}",
        "",
        "| family | faults | recall online | recall offline | time to detect median / max"
        " | target | pass/fail |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in FAULT_FAMILIES:
        runs = [s for s in faulty if s.family == family]
        if not runs:
            continue
        online = sum(s.found_online for s in runs)
        offline = sum(s.found_offline for s in runs)
        ttds = [s.ttd for s in runs if s.found_online and s.ttd is not None]
        limit: Optional[int] = TTD_TARGETS.get(family)
        ok = min(online, offline) >= RECALL_TARGET * len(runs)
        if limit is not None:
            ok = ok and bool(ttds) and max(ttds) <= limit
        passed = passed and ok
        target = f"recall >= {RECALL_TARGET:.0%}" + (
            f", <= {limit} steps" if limit is not None else ", in its window"
        )
        lines.append(
            f"| {family} | {len(runs)} | {online}/{len(runs)} | {offline}/{len(runs)}"
            f" | {_ttd_figure(ttds)} | {target} | {verdict(ok)} |"
        )
    found_on = sum(s.found_online for s in faulty)
    found_off = sum(s.found_offline for s in faulty)
    recall_ok = min(found_on, found_off) >= RECALL_TARGET * len(faulty)  # none: n/a, ok
    explained_on = sum(s.explained_online for s in faulty)
    shown_on = sum(s.shown_online for s in faulty)
    explained_off = sum(s.explained_offline for s in faulty)
    shown_off = sum(s.shown_offline for s in faulty)
    precision_on = explained_on / shown_on if shown_on else 1.0
    precision_off = explained_off / shown_off if shown_off else 1.0
    precision_ok = min(precision_on, precision_off) >= PRECISION_TARGET
    real = [s for s in counted if s.family == HEALTHY]
    long = [s for s in counted if s.family == HEALTHY_LONG]
    rows: list[tuple[str, Sequence[Score]]] = [
        ("real trainings", real),
        ("long synthetic runs", long),
        ("combined", [*real, *long]),
    ]
    skipped = sum(1 for s in mine if s.skipped)
    crashes = sum(1 for s in mine if s.error)
    agree = sum(s.agree for s in counted)
    lines += [
        "",
        "| measure | figure | target | pass/fail |",
        "|---|---|---|---|",
        f"| recall, all faults | online {found_on}/{len(faulty)}, offline"
        f" {found_off}/{len(faulty)} ({skipped} skipped) | >= {RECALL_TARGET:.0%}"
        f" | {verdict(recall_ok)} |",
        f"| precision over shown episodes of the faulty runs | online {explained_on}/{shown_on}"
        f" ({precision_on:.1%}), offline {explained_off}/{shown_off} ({precision_off:.1%})"
        f" | >= {PRECISION_TARGET:.0%} | {verdict(precision_ok)} |",
    ]
    passed = passed and recall_ok and precision_ok
    for label, group in rows:
        steps = sum(s.steps for s in group)
        alarms = sum(s.shown_online for s in group)
        rate = _rate(alarms, steps)
        ok = rate <= FALSE_ALARM_TARGET
        if label == "combined":
            passed = passed and ok
        infos = sum(s.info_online for s in group)
        lines.append(
            f"| false alarms per 1,000 healthy steps, {label} ({len(group)} runs, {steps:,}"
            f" steps) | {rate:.3f} ({alarms}: {_types(group)}; info episodes {infos})"
            f" | <= {FALSE_ALARM_TARGET} | {verdict(ok) if label == 'combined' else 'info'} |"
        )
    passed = passed and crashes <= CRASH_TARGET
    lines += [
        f"| online = offline (type, start, subject of shown episodes) | {agree}/{len(counted)}"
        " runs | all | info |",
        f"| crashes | {crashes} | {CRASH_TARGET} | {verdict(crashes <= CRASH_TARGET)} |",
        "",
    ]
    return lines, passed
