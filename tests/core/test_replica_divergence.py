"""`replica_divergence` on hand-made per-rank fingerprint series: which step, which ranks,
which model; float noise and non-finite weights; order of arrival and the run's end."""

from __future__ import annotations

import math
from typing import Any, Optional

from tracer.detection.replicas import ReplicaDivergenceDetector
from tracer.detection.runner import DetectorSet
from tracer.testing import make_event

CHECKS = [0, 50, 100, 150]


def judge(
    fingerprints: dict[int, list[float]],
    prefix: str = "",
    world_size: Optional[int] = None,
    **settings: Any,
) -> list[Any]:
    detectors = DetectorSet("run", [ReplicaDivergenceDetector(settings or None)])
    size = world_size if world_size is not None else len(fingerprints)
    event = make_event(0, "rank_summaries", {"world_size": size, "grad_norm": "local"})
    series = {
        f"rank/{rank}/{prefix}weight_fingerprint": (CHECKS[: len(values)], values)
        for rank, values in fingerprints.items()
    }
    return [*detectors.feed(series, [event]), *detectors.finish()]


def episodes(found: list[Any]) -> list[tuple[Any, ...]]:
    """Each episode's final state: (start, end, count, severity, subject, open)."""
    last = {(a["step"], a["subject"]): a for a in found}
    return [
        (a["step"], a["end_step"], a["count"], a["severity"], a["subject"], a["open"])
        for a in last.values()
    ]


def test_equal_replicas_are_not_reported() -> None:
    assert judge({0: [3.5, 4.25, 5.0, 6.0], 1: [3.5, 4.25, 5.0, 6.0]}) == []


def test_replicas_drifting_apart_are_one_critical_episode() -> None:
    """Equal at step 0, apart from step 50 on (the forward bypassed the DDP wrapper)."""
    found = judge({0: [3.5, 4.0, 4.5, 5.0], 1: [3.5, 4.1, 4.9, 5.6]})
    assert episodes(found) == [(50, 150, 3, "critical", "weight_fingerprint", False)]
    assert (
        "the weights of ranks 0 and 1 differ at step 50: the replicas diverged"
        in (found[0]["message"])
    )
    assert "first check" not in found[0]["message"]
    assert "ddp_model(x), not ddp_model.module(x)" in found[0]["hint"]
    assert found[0]["value"] == abs(4.1 - 4.0) / 4.1  # the relative difference
    assert found[0]["threshold"] == 1e-5


def test_float_noise_within_the_tolerance_is_not_a_divergence() -> None:
    assert judge({0: [1000.0, 1000.0], 1: [1000.0, 1000.0001]}) == []  # 1e-7 relative
    assert len(episodes(judge({0: [1000.0, 1000.0], 1: [1000.0, 1000.1]}))) == 1  # 1e-4
    assert judge({0: [1000.0, 1000.0], 1: [1000.0, 1000.1]}, tolerance=1e-3) == []


def test_different_starting_weights_are_named_at_the_first_check() -> None:
    """A rank that loaded another checkpoint (after DDP's broadcast) differs at step 0."""
    found = judge({0: [2.0, 2.5], 1: [7.0, 7.5]})
    assert episodes(found) == [(0, 50, 2, "critical", "weight_fingerprint", False)]
    assert "at the first check: the ranks started from different weights" in found[0]["message"]


def test_the_ranks_apart_are_named_against_those_that_agree() -> None:
    found = judge({0: [1.0, 2.0], 1: [1.0, 2.0], 2: [1.0, 2.5], 3: [1.0, 2.0]})
    assert episodes(found) == [(50, 50, 1, "critical", "weight_fingerprint", False)]
    assert "rank(s) 2 and rank(s) 0, 1, 3 differ at step 50" in found[0]["message"]


def test_a_model_is_named_by_its_prefix() -> None:
    found = judge({0: [1.0, 2.0], 1: [1.0, 3.0]}, prefix="m1.")
    assert episodes(found) == [(50, 50, 1, "critical", "m1.weight_fingerprint", False)]
    assert "the weights of model m1 of ranks 0 and 1" in found[0]["message"]


def test_agreeing_again_closes_the_episode() -> None:
    """Weights re-synchronised (every rank reloaded one checkpoint): a later drift is a new
    episode."""
    found = judge({0: [1.0, 2.0, 3.0, 4.0], 1: [1.0, 2.5, 3.0, 4.5]})
    assert [e[:3] for e in episodes(found)] == [(50, 50, 1), (150, 150, 1)]


def test_non_finite_weights_on_one_rank_diverge_on_every_rank_do_not() -> None:
    nan = math.nan
    found = judge({0: [1.0, 2.0], 1: [1.0, nan]})
    assert [e[:4] for e in episodes(found)] == [(50, 50, 1, "critical")]
    assert found[0]["value"] == math.inf
    assert judge({0: [1.0, nan], 1: [1.0, nan]}) == []  # nan_or_inf's case


def test_steps_wait_for_every_rank_then_the_end_judges_what_came() -> None:
    """Series arriving one by one, before the world size is known: nothing is judged until
    every rank's value of a step is there; at the end, a step two of three ranks sent."""
    detectors = DetectorSet("run", [ReplicaDivergenceDetector()])
    assert detectors.feed({"rank/1/weight_fingerprint": ([0, 50], [1.0, 2.5])}) == []
    assert detectors.feed({"rank/0/weight_fingerprint": ([0, 50], [1.0, 2.0])}) == []
    event = make_event(0, "rank_summaries", {"world_size": 3, "grad_norm": "local"})
    assert detectors.feed({}, [event]) == []  # rank 2 has sent nothing yet
    assert detectors.feed({"rank/2/weight_fingerprint": ([0], [1.0])}) == []  # step 0: equal
    found = detectors.finish()  # rank 2's block of step 50 never came
    assert [(a["step"], a["severity"], a["open"]) for a in found] == [(50, "critical", False)]
    assert "the weights of ranks 0 and 1 differ at step 50" in found[0]["message"]


def test_one_rank_alone_is_never_judged() -> None:
    """Only rank 0 traces: no other rank's fingerprint, nothing to compare."""
    assert judge({0: [1.0, 2.0, 3.0]}, world_size=2) == []
