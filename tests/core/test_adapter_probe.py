"""The silent-bug probe under an adapter's capture point, in a plain torch loop shaped as the
adapters drive it (tests/hf, tests/lightning and tests/accelerate run it under the real
frameworks): the optimizer passed to `run.watch(..., capture_point=...)` is probed, its step
beginning at `capture_gradients()` (adding no pre-hook), its sample at the step the adapter
moved the run to; an optimizer that cannot be hooked is left out, not refused."""

from __future__ import annotations

from typing import Any

import pytest

import tracer
from tests.core.helpers import series

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS = 25


def make_model() -> Any:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def batch(seed: int) -> tuple[Any, Any]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=generator), torch.randn(16, 1, generator=generator)


def test_the_step_moves_inside_the_optimizer_hooks_and_samples_keep_their_step() -> None:
    """As Fabric's and Accelerate's adapters do: their own pre-hook, added after the watch,
    moves the run to step k (closing step k-1 inside the optimizer's step) and captures.
    Samples land at optimizer steps 1, 11, 21, each with its update size; the probe adds no
    pre-hook of its own."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", track_system_metrics=False)
    run.watch(model, optimizer, capture_point="framework_optimizer_step")
    done = [0]

    def before(optimizer: Any, args: Any, kwargs: Any) -> None:
        run.log({}, step=done[0] + 1)
        run.capture_gradients()

    def after(optimizer: Any, args: Any, kwargs: Any) -> None:
        done[0] += 1

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
    assert len(optimizer._optimizer_step_pre_hooks) == 1  # the adapter's only
    for step in range(STEPS):
        nn.functional.mse_loss(model(batch(step)[0]), batch(step)[1]).backward()
        optimizer.step()
        optimizer.zero_grad()
    run.log({}, step=STEPS + 1)
    tracer.finish()
    assert series(run.run_id, "optimizer/lr/0") == {"steps": [1, 11, 21], "values": [0.05] * 3}
    ratios = series(run.run_id, "optimizer/update_ratio_median")
    assert ratios["steps"] == [1, 11, 21]
    assert all(ratio > 0 for ratio in ratios["values"])
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(1, STEPS + 1))


def test_an_optimizer_that_cannot_be_hooked_is_left_out_under_an_adapter() -> None:
    """A DeepSpeed-like placeholder (no step hooks): the model is watched without the probe,
    where `tracer.watch(model, optimizer=...)` without a capture point raises TypeError."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", track_system_metrics=False)
    run.watch(model, object(), capture_point="framework_optimizer_step")
    for step in range(12):
        nn.functional.mse_loss(model(batch(step)[0]), batch(step)[1]).backward()
        run.capture_gradients()
        optimizer.step()
        optimizer.zero_grad()
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(12))
    assert series(run.run_id, "optimizer/lr/0")["steps"] == []
