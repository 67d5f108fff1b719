"""Every scenario with its split assigned, and the --quick subset."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .healthy import healthy, healthy_long
from .scenarios import FAULT_FAMILIES, HEALTHY, Scenario, faulty


def assign_splits(scenarios: Iterable[Scenario]) -> list[Scenario]:
    """Alternate tune / held within each family, in declaration order."""
    seen: dict[str, int] = {}
    result = []
    for scenario in scenarios:
        index = seen.get(scenario.family, 0)
        seen[scenario.family] = index + 1
        result.append(scenario.replace(split="tune" if index % 2 == 0 else "held"))
    return result


def catalogue() -> list[Scenario]:
    """Every scenario, splits assigned; names are unique."""
    scenarios = assign_splits([*faulty(), *healthy(), *healthy_long()])
    names = [s.name for s in scenarios]
    assert len(names) == len(set(names)), "scenario names must be unique"
    return scenarios


def shortened(scenario: Scenario, steps: int) -> Scenario:
    """A synthetic run cut to `steps`, its fault onset scaled alike (for --quick)."""
    if not scenario.synthetic or scenario.steps <= steps:
        return scenario
    fault = scenario.fault
    if fault is not None:
        fault = dataclasses.replace(fault, onset=fault.onset * steps // scenario.steps)
    return scenario.replace(steps=steps, fault=fault)


def quick_subset(scenarios: Iterable[Scenario], long_steps: int) -> list[Scenario]:
    """One faulty scenario per family (from the tune and the held half in turn, so both
    halves are scored), two healthy trainings (one per half), the long runs shortened."""
    chosen: list[Scenario] = []
    families: set[str] = set()
    healthy_count = 0
    for scenario in scenarios:
        if scenario.synthetic:
            chosen.append(shortened(scenario, long_steps))
        elif scenario.family == HEALTHY:
            if healthy_count < 2:
                chosen.append(scenario)
                healthy_count += 1
        elif scenario.family not in families and not scenario.needs_cuda:
            wanted = "tune" if FAULT_FAMILIES.index(scenario.family) % 2 == 0 else "held"
            if scenario.split == wanted:
                families.add(scenario.family)
                chosen.append(scenario)
    return chosen
