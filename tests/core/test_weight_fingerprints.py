"""`WeightFingerprints` on real modules: when it is due, what it covers, what changes it."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from tracer.capture.gradients.replicas import (  # noqa: E402
    SAMPLE_ELEMENTS,
    WeightFingerprints,
    like_rank_zero,
    replicated_parameters,
)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def fingerprint(*models: torch.nn.Module) -> list[float]:
    prints = WeightFingerprints(50)
    for index, each in enumerate(models):
        prints.add(f"m{index}." if index else "", each)
    taken = prints.take(0)
    assert taken is not None
    return [float(v) for v in taken.values.tolist()]


def test_due_at_the_first_capture_at_or_after_each_multiple_of_the_interval() -> None:
    prints = WeightFingerprints(50)
    assert not prints.due(0)  # no model yet
    prints.add("", model())
    taken = []
    for step in [0, 1, 2, 49, 51, 52, 99, 100, 101, 175]:  # steps 50 and 150 not captured
        if prints.due(step):
            prints.take(step)
            taken.append(step)
    assert taken == [0, 51, 100, 175]


def test_copies_agree_bitwise_and_any_change_shows() -> None:
    first, second = model(), model()
    assert fingerprint(first) == fingerprint(second)
    with torch.no_grad():
        second[2].bias.add_(1e-3)
    assert fingerprint(first) != fingerprint(second)
    swapped = copy.deepcopy(first)
    with torch.no_grad():  # the same values in another order
        swapped[0].weight.copy_(swapped[0].weight.flip(0))
    assert fingerprint(first) != fingerprint(swapped)


def test_frozen_parameters_count_and_mixed_dtypes_work() -> None:
    """A checkpoint loaded on one rank changes frozen weights too; bf16 beside fp32."""
    first, second = model(), model()
    for each in (first, second):
        each[0].requires_grad_(False)
        each[2].to(torch.bfloat16)
    with torch.no_grad():
        second[0].weight[3, 2] += 0.5  # frozen, in the sample (a 96-value tensor: all kept)
    values = fingerprint(first, second)
    assert len(values) == 2 and values[0] != values[1]


def test_large_parameters_are_sampled_and_sharded_ones_left_out() -> None:
    big = torch.nn.Linear(1000, 100)  # 100,000 values: every 49th is sampled
    prints = WeightFingerprints(50)
    prints.add("", big)
    assert prints.elements() == {"": 100_100}
    flat = big.weight.detach().reshape(-1)
    assert flat[:: -(-flat.numel() // SAMPLE_ELEMENTS)].numel() <= SAMPLE_ELEMENTS

    class Shard(torch.nn.Parameter):
        def to_local(self) -> torch.Tensor:
            return self.data

    half = torch.nn.Linear(4, 4)
    half.weight = Shard(torch.zeros(4, 4))
    assert replicated_parameters(half) == [half.bias]


def test_a_model_without_replicated_parameters_is_not_fingerprinted() -> None:
    prints = WeightFingerprints(50)
    prints.add("", torch.nn.Identity())
    assert prints.elements() == {} and not prints.due(0)


def test_rank_zero_keeps_only_the_models_like_its_own() -> None:
    """Model m1 of the other rank holds another number of values (a pipeline stage): its
    fingerprints are left out and named; the first model's are kept."""
    marks = [(0, ["", "m1."], [100, 64], [1.5, 2.5]), (50, ["", "m1."], [100, 64], [1.6, 2.6])]
    kept, unlike = like_rank_zero({"": 100, "m1.": 32}, marks)
    assert kept == [(0, [""], [100], [1.5]), (50, [""], [100], [1.6])]
    assert unlike == {"m1.": "64 values against 32"}
    assert like_rank_zero({}, marks) == (
        [],
        {"model": "100 values against 0", "m1.": "64 values against 0"},
    )
