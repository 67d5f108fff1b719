"""Gradient capture on real CPU training loops, checked against straightforward references."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import tracer
from tests.core.helpers import open_store, series

torch = pytest.importorskip("torch")
nn = torch.nn


def make_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))


def batch(seed: int) -> tuple[Any, Any]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=generator), torch.randn(16, 1, generator=generator)


def reference_norms(model: Any) -> dict[str, float]:
    return {
        name: p.grad.double().norm().item()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def global_norm(norms: dict[str, float]) -> float:
    return math.sqrt(sum(value * value for value in norms.values()))


def train(
    model: Any,
    optimizer: Any,
    steps: int,
    *,
    accumulation: int = 1,
    before_step: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """A plain loop, one tracer.step() per optimizer step; returns per-step reference norms."""
    references = []
    for step in range(steps):
        for micro in range(accumulation):
            inputs, targets = batch(step * 100 + micro)
            loss = nn.functional.mse_loss(model(inputs), targets) / accumulation
            loss.backward()
        if before_step is not None:
            before_step(step)
        references.append(reference_norms(model))
        optimizer.step()
        optimizer.zero_grad()
        tracer.log({"loss": loss.detach() * accumulation})
        tracer.step()
    return references


def test_one_capture_per_optimizer_step_with_accumulation_matches_the_reference() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", checkpoint_interval=5)
    tracer.watch(model, optimizer=optimizer)
    references = train(model, optimizer, 12, accumulation=4)
    tracer.finish()
    captured = series(run.run_id, "grad/global_norm")
    assert captured["steps"] == list(range(12))  # once per optimizer step, not per micro-batch
    expected = [global_norm(r) for r in references]
    assert captured["values"] == pytest.approx(expected, rel=1e-5)
    max_abs = series(run.run_id, "grad/max_abs")["values"]
    assert all(0 < m <= g for m, g in zip(max_abs, captured["values"], strict=True))
    assert series(run.run_id, "grad/nonfinite_layers")["values"] == [0.0] * 12
    with open_store() as store:
        (event,) = store.get_events(run.run_id, kind="gradient_capture")
    assert event["data"]["point"] == "optimizer_step"
    assert event["data"]["layers"] == [name for name, _ in model.named_parameters()]


def test_checkpoint_statistics_match_a_per_layer_reference() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", checkpoint_interval=5)
    tracer.watch(model, optimizer=optimizer)
    expected: dict[str, dict[str, float]] = {}

    def record(step: int) -> None:
        if step == 5:
            model[0].weight.grad[0, :3] = 0.0  # some exact zeros to count
            for name, p in model.named_parameters():
                g = p.grad.double().flatten()
                expected[name] = {
                    "norm": g.norm().item(),
                    "mean": g.mean().item(),
                    "std": g.std(correction=0).item(),
                    "min": g.min().item(),
                    "max": g.max().item(),
                    "num_zeros": float((g == 0).sum()),
                    "num_nans": 0.0,
                    "num_infs": 0.0,
                }

    references = train(model, optimizer, 8, before_step=record)
    tracer.finish()
    with open_store() as store:
        checkpoints = {c["step"]: c for c in store.get_checkpoints(run.run_id)}
    stats = checkpoints[5]["gradient_stats"]
    assert set(stats) == set(expected)
    for name, reference in expected.items():
        for key, value in reference.items():
            assert stats[name][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (name, key)
        peak = max(r[name] for r in references[:6])
        assert stats[name]["max_norm_since_checkpoint"] == pytest.approx(peak, rel=1e-5)
    assert stats["0.weight"]["num_zeros"] == 3.0
    final = checkpoints[7]["gradient_stats"]  # after zero_grad: last norms and peaks
    for name in expected:
        assert final[name]["norm"] == pytest.approx(references[7][name], rel=1e-5)
        peak = max(r[name] for r in references[6:8])
        assert final[name]["max_norm_since_checkpoint"] == pytest.approx(peak, rel=1e-5)


def test_nan_in_one_layer_is_reported_at_that_step_with_that_layer() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p")
    tracer.watch(model, optimizer=optimizer)

    def poison(step: int) -> None:
        if step == 6:
            model[2].bias.grad[3] = float("nan")

    train(model, optimizer, 10, before_step=poison)
    tracer.finish()
    counts = series(run.run_id, "grad/nonfinite_layers")
    assert counts["values"][:6] == [0.0] * 6 and counts["values"][6] == 1.0
    with open_store() as store:
        events = store.get_events(run.run_id, kind="nonfinite_gradients")
    assert events[0]["step"] == 6
    assert events[0]["data"] == {"layers": ["2.bias"], "first_layer": "2.bias"}
    assert math.isnan(series(run.run_id, "grad/global_norm")["values"][6])


def test_grad_scaler_values_are_unscaled_and_skipped_steps_are_recorded() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    run = tracer.init(project="p")
    tracer.watch(model, optimizer=optimizer)
    unscaled = []
    for step in range(6):
        inputs, targets = batch(step)
        loss = nn.functional.mse_loss(model(inputs), targets)
        scaler.scale(loss).backward()
        if step == 3:
            model[0].weight.grad[0, 0] = float("inf")  # an fp16-style overflow
        scaler.unscale_(optimizer)
        unscaled.append(global_norm(reference_norms(model)))
        scaler.step(optimizer)  # skips optimizer.step() at step 3
        scaler.update()
        optimizer.zero_grad()
        tracer.log({"loss": loss.detach()})
        tracer.step()
    tracer.finish()
    captured = series(run.run_id, "grad/global_norm")
    assert captured["steps"] == [0, 1, 2, 4, 5]  # the skipped step is not captured
    expected = [unscaled[s] for s in captured["steps"]]
    assert captured["values"] == pytest.approx(expected, rel=1e-5)
    assert series(run.run_id, "optimizer/skipped_step") == {"steps": [3], "values": [1.0]}
    with open_store() as store:
        assert [e["step"] for e in store.get_events(run.run_id, "optimizer_step_skipped")] == [3]


def test_an_optimizer_step_without_any_gradient_is_recorded_as_gradients_missing() -> None:
    """zero_grad() between backward() and step() (a classic slip): the optimizer steps with
    no gradient on any parameter and changes nothing. Each such step is the event
    "gradients_missing"; a step with gradients is captured as usual."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    run = tracer.init(project="p")
    tracer.watch(model, optimizer=optimizer)
    for step in range(5):
        inputs, targets = batch(step)
        nn.functional.mse_loss(model(inputs), targets).backward()
        if step >= 2:
            optimizer.zero_grad()  # the slip: the gradients are gone before step()
        optimizer.step()
        optimizer.zero_grad()
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == [0, 1]
    with open_store() as store:
        missing = store.get_events(run.run_id, "gradients_missing")
        assert store.get_events(run.run_id, "optimizer_step_skipped") == []
    assert [e["step"] for e in missing] == [2, 3, 4]
    assert missing[0]["data"] == {"model": "Sequential"}


def test_without_an_optimizer_the_last_backward_before_step_wins() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p")
    tracer.watch(model)
    references = train(model, optimizer, 5, accumulation=3)
    tracer.finish()
    captured = series(run.run_id, "grad/global_norm")
    assert captured["steps"] == list(range(5))
    assert captured["values"] == pytest.approx([global_norm(r) for r in references], rel=1e-5)
    with open_store() as store:
        (event,) = store.get_events(run.run_id, kind="gradient_capture")
    assert event["data"]["point"] == "backward_end"


def test_frozen_layers_and_gradient_layers_select_what_is_watched() -> None:
    model = make_model()
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    run = tracer.init(project="p", checkpoint_interval=2, gradient_layers=["4", "*.bias"])
    tracer.watch(model, optimizer=optimizer)
    references = train(model, optimizer, 3)
    tracer.finish()
    watched = ["0.bias", "2.bias", "4.weight", "4.bias"]  # "4" is a module prefix
    with open_store() as store:
        (event,) = store.get_events(run.run_id, kind="gradient_capture")
        checkpoint = store.get_checkpoints(run.run_id)[0]
    assert event["data"]["layers"] == watched
    assert sorted(checkpoint["gradient_stats"]) == sorted(watched)
    expected = [math.sqrt(sum(r[n] ** 2 for n in watched)) for r in references]
    assert series(run.run_id, "grad/global_norm")["values"] == pytest.approx(expected, rel=1e-5)


def test_bf16_gradients_are_reduced_in_float32() -> None:
    model = make_model().to(torch.bfloat16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p")
    tracer.watch(model, optimizer=optimizer)
    references = []
    for step in range(3):
        inputs, targets = batch(step)
        loss = nn.functional.mse_loss(model(inputs.bfloat16()), targets.bfloat16())
        loss.backward()
        references.append(
            global_norm({n: p.grad.float().norm().item() for n, p in model.named_parameters()})
        )
        optimizer.step()
        optimizer.zero_grad()
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["values"] == pytest.approx(references, rel=1e-6)


def test_parameters_without_a_gradient_this_step_are_not_non_finite() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.left = nn.Linear(4, 1)
            self.right = nn.Linear(4, 1)

        def forward(self, x: Any, use_left: bool) -> Any:
            return (self.left if use_left else self.right)(self.body(x))

    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", checkpoint_interval=1000)
    tracer.watch(model, optimizer=optimizer)
    references = []
    for step in range(4):
        model(torch.randn(8, 4), use_left=step % 2 == 0).sum().backward()
        references.append(global_norm(reference_norms(model)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/nonfinite_layers")["values"] == [0.0] * 4
    assert series(run.run_id, "grad/global_norm")["values"] == pytest.approx(references, rel=1e-5)


def test_several_models_each_get_their_own_series() -> None:
    generator, critic = make_model(1), make_model(2)
    g_opt = torch.optim.SGD(generator.parameters(), lr=0.01)
    c_opt = torch.optim.SGD(critic.parameters(), lr=0.01)
    run = tracer.init(project="p")
    tracer.watch(generator, optimizer=g_opt)
    tracer.watch(critic, optimizer=c_opt)
    for step in range(3):
        inputs, _ = batch(step)
        critic(inputs).mean().backward()
        c_opt.step()
        c_opt.zero_grad()
        generator(inputs).mean().backward()
        g_opt.step()
        g_opt.zero_grad()
        tracer.step()
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == [0, 1, 2]
    assert series(run.run_id, "m1.grad/global_norm")["steps"] == [0, 1, 2]
    with open_store() as store:
        layers = [e["data"]["layers"][0] for e in store.get_events(run.run_id, "gradient_capture")]
    assert layers == ["0.weight", "m1.0.weight"]


def test_more_steps_than_the_ring_holds_are_all_stored() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    run = tracer.init(project="p", checkpoint_interval=100)
    tracer.watch(model, optimizer=optimizer)
    train(model, optimizer, 150)
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == list(range(150))


def test_no_hooks_are_left_after_finish() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracer.init(project="p")
    tracer.watch(model, optimizer=optimizer)
    train(model, optimizer, 2)
    assert optimizer._optimizer_step_pre_hooks and model._forward_hooks
    tracer.finish()
    assert not optimizer._optimizer_step_pre_hooks
    assert not model._forward_hooks and not model._forward_hooks_with_kwargs
    assert all(not p._backward_hooks for p in model.parameters())
    inputs, targets = batch(99)  # training on without Tracer works
    nn.functional.mse_loss(model(inputs), targets).backward()
    optimizer.step()


def test_track_gradients_false_attaches_nothing() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p", track_gradients=False, capture_samples=0)
    tracer.watch(model, optimizer=optimizer)
    assert not optimizer._optimizer_step_pre_hooks and not model._forward_hooks
    assert all(not p._backward_hooks for p in model.parameters())
    train(model, optimizer, 2)
    tracer.finish()
    assert series(run.run_id, "grad/global_norm")["steps"] == []


def test_watch_misuse_raises_clearly() -> None:
    with pytest.raises(RuntimeError, match=r"tracer\.init"):
        tracer.watch(make_model())
    tracer.init(project="p")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        tracer.watch("model")
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        tracer.watch(make_model(), optimizer="adam")


def test_an_adapter_capture_point_captures_when_told_and_records_skips() -> None:
    """Framework adapters watch with a `capture_point` and call `capture_gradients()` at
    their pre-optimizer event: no hooks are attached, and a skip they report is recorded."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(project="p")
    run.watch(model, capture_point="framework_pre_optimizer_step")
    assert not optimizer._optimizer_step_pre_hooks
    assert all(not p._backward_hooks for p in model.parameters())
    references = []
    for step in range(5):
        inputs, targets = batch(step)
        nn.functional.mse_loss(model(inputs), targets).backward()
        references.append(global_norm(reference_norms(model)))
        if step == 2:
            run.record_skipped_optimizer_step()
        else:
            run.capture_gradients()
            optimizer.step()
        optimizer.zero_grad()
        tracer.step()
    tracer.finish()
    captured = series(run.run_id, "grad/global_norm")
    assert captured["steps"] == [0, 1, 3, 4]
    assert captured["values"] == pytest.approx([references[s] for s in (0, 1, 3, 4)], rel=1e-5)
    assert series(run.run_id, "optimizer/skipped_step") == {"steps": [2], "values": [1.0]}
    with open_store() as store:
        (event,) = store.get_events(run.run_id, kind="gradient_capture")
    assert event["data"]["point"] == "framework_pre_optimizer_step"


def test_a_drain_asked_for_by_an_anomaly_keeps_every_step_in_place() -> None:
    """A NaN loss at step 20 makes the writer ask for the gradients of that step early. The
    drain that follows must not shift the row of the step being closed onto another step:
    from step 20 on (NaN weights), every captured step reads non-finite; before, none."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    run = tracer.init(project="capture", flush_interval=0.01)
    tracer.watch(model, optimizer)
    for step in range(60):
        x, y = batch(step)
        if step == 20:
            x = x.clone()
            x[0, 0] = float("nan")
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracer.log({"loss": loss.detach()})
        if step in (21, 40):
            run.flush()  # the anomaly is found; its drain request lands at the next step
        tracer.step()
    tracer.finish()
    history = series(run.run_id, "grad/nonfinite_layers")
    steps, values = history["steps"], history["values"]
    assert steps == list(range(60))
    assert all(v == 0 for v in values[:20])
    assert all(v > 0 for v in values[20:]), values[20:]


def test_a_drained_step_is_held_until_its_norms_are_read_back() -> None:
    """Between the training thread's drain of the ring and the writer's read of those rows a
    step is in neither: an anomaly checkpoint taken then found no gradient norms (a flaky
    test under load). Every captured step is now held or readable at every moment."""
    from tracer.capture.gradients.collector import GradientCapture

    run = tracer.init(project="p", track_system_metrics=False)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracer.watch(model, optimizer=optimizer)
    (capture,) = [c for c in run._collectors if isinstance(c, GradientCapture)]
    (watch,) = capture._watches
    for step in range(40):
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        tracer.log({"loss": 1.0})
        tracer.step()
        watch.drain()  # as an anomaly's drain request does, at once
        assert watch.holds(step) or watch.anomaly_stats(step), step
    tracer.finish()
