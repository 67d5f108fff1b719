"""`rank_divergence` on hand-made per-rank series: which rank, which step, which kind."""

from __future__ import annotations

from typing import Any

from tracer.detection.ranks import RankDivergenceDetector
from tracer.detection.runner import DetectorSet
from tracer.testing import make_event


def judge(source: str, norms: dict[int, list[float]], **settings: Any) -> list[Any]:
    detectors = DetectorSet("run", [RankDivergenceDetector(settings or None)])
    steps = list(range(1, len(norms[0]) + 1))
    event = make_event(1, "rank_summaries", {"world_size": len(norms), "grad_norm": source})
    series = {f"rank/{r}/grad_norm": (steps, values) for r, values in norms.items()}
    return detectors.feed(series, [event])


def test_one_rank_nonfinite_is_named_once_per_episode() -> None:
    nan = float("nan")
    found = judge("local", {0: [1.0, 1.1, 1.0, 1.2, 1.0], 1: [1.0, nan, nan, 1.0, nan]})
    assert [(a["step"], a["subject"], a["severity"]) for a in found] == [
        (2, "rank/1", "critical"),
        (5, "rank/1", "critical"),
    ]
    assert "rank 1's gradients are non-finite" in found[0]["message"]
    assert "rank(s) 0 are finite" in found[0]["message"]


def test_all_ranks_nonfinite_is_not_a_divergence() -> None:
    nan = float("nan")
    assert judge("local", {0: [1.0, nan, nan], 1: [1.0, nan, nan]}) == []


def test_local_norms_drift_after_patience() -> None:
    """Local norms differ by batch: 3x is normal; 20x for `patience` steps is reported."""
    base = [1.0, 1.1, 0.9, 1.0, 1.05, 1.0, 1.0]
    drifting = [3.0, 1.0, 20.0, 21.0, 22.0, 23.0, 1.0]
    found = judge("local", {0: base, 1: base, 2: drifting})
    assert [(a["step"], a["subject"], a["severity"]) for a in found] == [(5, "rank/2", "warning")]
    assert found[0]["baseline"] == 1.05  # the median of the other ranks


def test_synchronized_norms_must_agree() -> None:
    """After the all-reduce every rank holds the same gradients: 1% apart is reported at once."""
    same = [2.0, 2.0, 2.0]
    found = judge("synchronized", {0: same, 1: [2.0, 2.02, 2.0]})
    assert {(a["step"], a["subject"]) for a in found} == {(2, "rank/0"), (2, "rank/1")}
    assert judge("synchronized", {0: same, 1: [2.0, 2.0000001, 2.0]}) == []


def test_steps_wait_for_every_rank_and_the_world_size() -> None:
    """Series arriving one by one, before the event: nothing is judged until all are there."""
    detectors = DetectorSet("run", [RankDivergenceDetector()])
    nan = float("nan")
    assert detectors.feed({"rank/1/grad_norm": ([1, 2], [1.0, nan])}) == []
    assert detectors.feed({"rank/0/grad_norm": ([1, 2], [1.0, 1.0])}) == []
    event = make_event(1, "rank_summaries", {"world_size": 2, "grad_norm": "local"})
    found = detectors.feed({}, [event])
    assert [(a["step"], a["subject"]) for a in found] == [(2, "rank/1")]
