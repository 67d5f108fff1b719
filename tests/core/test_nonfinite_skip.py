"""`on_nonfinite="skip"` in a plain torch loop watched with `tracer.watch(model, optimizer=opt)`:
NaN or Inf written into the gradients at chosen steps (after backward, before the step).

A skipped step must leave the parameters and the optimizer's state exactly as they were
(SGD with momentum and weight decay, Adam, AdamW, their foreach and fused variants): the
training then ends with the very weights and state of the same loop that never called
`optimizer.step()` at those steps. Skips are stored, a run of them stops training, the default
mode changes nothing, and a step a GradScaler skipped is the scaler's, not Tracer's.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from pydantic import ValidationError

import tracer
from tests.core.helpers import open_store
from tracer.config import TracerConfig

torch = pytest.importorskip("torch")  # core-notorch runs tests/core without it

FEATURES = 4
Optimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Optimizer] = {
    "sgd_momentum": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False
    ),
    "sgd_momentum_foreach": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=True
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, foreach=False),
    "adam_foreach": lambda p: torch.optim.Adam(p, lr=0.01, foreach=True),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=0.01, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, foreach=False),
    "adamw_foreach": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, foreach=True),
}


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, FEATURES, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def poison(model: torch.nn.Module, value: float, layer: int = 0) -> None:
    """Write `value` (NaN or Inf) into one gradient entry of `model[layer]`'s weight."""
    grad = model[layer].weight.grad
    assert grad is not None
    grad[0, 0] = value


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    return copy.deepcopy((model.state_dict(), optimizer.state_dict()["state"]))


def same(a: Any, b: Any) -> bool:
    """Equal nested dicts of tensors (exactly, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def finite(model: torch.nn.Module) -> bool:
    return all(bool(p.isfinite().all()) for p in model.parameters())


def train(
    optimizer: Optimizer,
    steps: int,
    bad: dict[int, float],
    *,
    traced: bool = True,
    step_on_bad: bool = True,
    **settings: Any,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[int], Any]:
    """A loop of `steps` optimizer steps, `bad[step]` written into a gradient at those steps.
    Returns the model, the optimizer, the steps at which `optimizer.step()` changed neither
    the weights nor the optimizer's state, and the run (None when not traced). Without
    `step_on_bad`, `optimizer.step()` is not called at the bad steps (the reference)."""
    model = make_model()
    opt = optimizer(model.parameters())
    run = None
    if traced:
        settings = {"on_nonfinite": "skip", "track_system_metrics": False, **settings}
        run = tracer.init(project="skip", **settings)
        tracer.watch(model, optimizer=opt)
    unchanged = []
    for step in range(steps):
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if step in bad:
            poison(model, bad[step])
        before = snapshot(model, opt)
        if step_on_bad or step not in bad:
            opt.step()
        if same(before, snapshot(model, opt)):
            unchanged.append(step)
        opt.zero_grad()
        if traced:
            tracer.log({"loss": loss.detach()})
            tracer.step()
    if traced:
        tracer.finish()
    return model, opt, unchanged, run


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_skipped_step_changes_neither_weights_nor_optimizer_state(name: str) -> None:
    """NaN at step 3, Inf at step 6: those steps change nothing, every other step does, and
    the training ends exactly where the loop that left those steps out ends (weights and
    state: momentum buffers, Adam moments, step counts), every weight finite."""
    bad = {3: math.nan, 6: math.inf}
    model, opt, unchanged, _ = train(OPTIMIZERS[name], 10, bad)
    assert unchanged == [3, 6]
    assert finite(model)
    reference, reference_opt, _, _ = train(
        OPTIMIZERS[name], 10, bad, traced=False, step_on_bad=False
    )
    assert same(snapshot(model, opt), snapshot(reference, reference_opt))


def test_skips_are_stored_as_skipped_steps_with_their_norms() -> None:
    bad = {3: math.nan, 6: math.inf}
    _, _, _, run = train(OPTIMIZERS["adamw"], 10, bad)
    with open_store() as store:
        stored = store.get_run(run.run_id)
        skipped = store.get_metric_timeseries(run.run_id, "optimizer/skipped_step")
        arrays = store.get_metric_arrays(run.run_id, "grad/global_norm")
        norms = dict(zip(*arrays, strict=True))
        events = store.get_events(run.run_id, "optimizer_step_skipped")
    assert stored is not None and stored["status"] == "finished"
    assert (skipped["steps"], skipped["values"]) == ([3, 6], [1.0, 1.0])
    assert [(e["step"], e["data"]) for e in events] == [
        (3, {"model": "Sequential", "reason": "nonfinite_gradients", "consecutive": 1}),
        (6, {"model": "Sequential", "reason": "nonfinite_gradients", "consecutive": 1}),
    ]
    assert math.isnan(norms[3]) and math.isinf(norms[6])  # why they were skipped
    assert all(math.isfinite(norms[s]) for s in range(10) if s not in bad)


def test_training_halts_after_max_consecutive_skips_in_a_row() -> None:
    """max_consecutive_skips=3: the bad steps 2, 4 5, 7 8 9 are skipped; a finite step resets
    the count, so `tracer.step()` raises TrainingHalted at step 9 only, the run failed with
    the reason."""
    bad = {s: math.nan for s in (2, 4, 5, 7, 8, 9)}
    model = make_model()
    opt = OPTIMIZERS["sgd_momentum"](model.parameters())
    run = tracer.init(
        project="skip", on_nonfinite="skip", max_consecutive_skips=3, track_system_metrics=False
    )
    tracer.watch(model, optimizer=opt)
    halted_at = None
    for step in range(30):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if step in bad:
            poison(model, bad[step])
        opt.step()
        opt.zero_grad()
        assert run.should_stop == (step == 9)
        try:
            tracer.step()
        except tracer.TrainingHalted as halted:
            halted_at = step
            assert halted.anomaly["anomaly_type"] == "nonfinite_gradients"
            assert "3 optimizer steps in a row" in halted.anomaly["message"]
            break
    assert halted_at == 9
    assert finite(model)
    with open_store() as store:
        stored = store.get_run(run.run_id)
        skipped = store.get_metric_timeseries(run.run_id, "optimizer/skipped_step")
        events = store.get_events(run.run_id, "optimizer_step_skipped")
    assert stored is not None and stored["status"] == "failed"
    assert "nonfinite_gradients" in (stored["error"] or "")
    assert "max_consecutive_skips=3" in (stored["error"] or "")
    assert skipped["steps"] == sorted(bad)
    assert [e["data"]["consecutive"] for e in events] == [1, 1, 2, 1, 2, 3]


def test_record_mode_steps_on_non_finite_gradients_as_before() -> None:
    """The default ("record"): the NaN step is applied (the weights go NaN, as without
    Tracer) and no skip is stored; only the gradients' non-finite norm is."""
    model, _, unchanged, run = train(
        OPTIMIZERS["sgd_momentum"], 6, {3: math.nan}, on_nonfinite="record"
    )
    assert 3 not in unchanged
    assert not finite(model)
    with open_store() as store:
        names = {m["name"] for m in store.list_metrics(run.run_id)}
        events = store.get_events(run.run_id, "optimizer_step_skipped")
    assert "optimizer/skipped_step" not in names
    assert not events
    assert TracerConfig(project_name="p").on_nonfinite == "record"


def test_a_gradient_outside_the_watched_layers_is_checked_too() -> None:
    """gradient_layers watches the first layer only; a NaN in the last layer's gradient still
    skips the whole step (the decision checks every gradient of the optimizer)."""
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    tracer.init(
        project="skip", on_nonfinite="skip", gradient_layers=["0"], track_system_metrics=False
    )
    tracer.watch(model, optimizer=opt)
    unchanged = []
    for step in range(5):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if step == 2:
            poison(model, math.nan, layer=2)
        before = snapshot(model, opt)
        opt.step()
        if same(before, snapshot(model, opt)):
            unchanged.append(step)
        opt.zero_grad()
        tracer.step()
    tracer.finish()
    assert unchanged == [2]
    assert finite(model)


def test_only_the_optimizer_with_non_finite_gradients_skips() -> None:
    """Two models, two optimizers (as a GAN): a NaN in the second model's gradient skips its
    optimizer's step, stored under its prefix; the first model trains on."""
    first, second = make_model(0), make_model(1)
    first_opt = OPTIMIZERS["sgd_momentum"](first.parameters())
    second_opt = OPTIMIZERS["sgd_momentum"](second.parameters())
    run = tracer.init(project="skip", on_nonfinite="skip", track_system_metrics=False)
    tracer.watch(first, optimizer=first_opt)
    tracer.watch(second, optimizer=second_opt)
    changed: dict[str, list[int]] = {"first": [], "second": []}
    for step in range(4):
        x, y = batch(step)
        for name, model, opt in (("first", first, first_opt), ("second", second, second_opt)):
            torch.nn.functional.mse_loss(model(x), y).backward()
            if name == "second" and step == 2:
                poison(model, math.nan)
            before = copy.deepcopy(model.state_dict())
            opt.step()
            if not same(before, model.state_dict()):
                changed[name].append(step)
            opt.zero_grad()
        tracer.step()
    tracer.finish()
    assert changed == {"first": [0, 1, 2, 3], "second": [0, 1, 3]}
    with open_store() as store:
        names = {m["name"] for m in store.list_metrics(run.run_id)}
        skipped = store.get_metric_timeseries(run.run_id, "m1.optimizer/skipped_step")
    assert "optimizer/skipped_step" not in names
    assert skipped["steps"] == [2]


def test_a_grad_scaler_skip_stays_the_scalers() -> None:
    """Under a GradScaler an Inf is found by the scaler, which does not call the optimizer:
    no decision is taken (the step is recorded as a scaler skip, without a reason) and it
    does not count toward max_consecutive_skips, here 1, so training goes on."""
    model = make_model()
    opt = OPTIMIZERS["sgd_momentum"](model.parameters())
    scaler = torch.amp.GradScaler("cpu")
    run = tracer.init(
        project="skip", on_nonfinite="skip", max_consecutive_skips=1, track_system_metrics=False
    )
    tracer.watch(model, optimizer=opt)
    for step in range(5):
        x, y = batch(step)
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if step == 2:
            poison(model, math.inf)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        tracer.step()  # no TrainingHalted: the scaler's skip is not Tracer's
    tracer.finish()
    assert finite(model)
    with open_store() as store:
        stored = store.get_run(run.run_id)
        skipped = store.get_metric_timeseries(run.run_id, "optimizer/skipped_step")
        events = store.get_events(run.run_id, "optimizer_step_skipped")
    assert stored is not None and stored["status"] == "finished"
    assert skipped["steps"] == [2]
    assert [e["data"] for e in events] == [{"model": "Sequential"}]


def test_watch_without_an_optimizer_warns_that_nothing_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer.init(project="skip", on_nonfinite="skip", track_system_metrics=False)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        tracer.watch(make_model())
    assert "needs tracer.watch(model, optimizer=...)" in caplog.text


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"on_nonfinite": "drop"}, "on_nonfinite"),
        ({"max_consecutive_skips": 0}, "max_consecutive_skips"),
        ({"on_nonfinite": "skip", "track_gradients": False}, "track_gradients"),
    ],
)
def test_bad_settings_fail_at_init(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        tracer.init(project="skip", **settings)


def test_an_optimizer_no_watch_captures_is_still_judged_and_its_skip_stored() -> None:
    """gradient_layers matches nothing (capture finds no parameter): the decision checks the
    optimizer's gradients itself, skips the NaN step and stores it without a prefix."""
    model = make_model()
    opt = OPTIMIZERS["sgd_momentum"](model.parameters())
    run = tracer.init(
        project="skip",
        on_nonfinite="skip",
        gradient_layers=["no_such_layer"],
        track_system_metrics=False,
    )
    tracer.watch(model, optimizer=opt)
    unchanged = []
    for step in range(4):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if step == 1:
            poison(model, math.inf)
        before = snapshot(model, opt)
        opt.step()
        if same(before, snapshot(model, opt)):
            unchanged.append(step)
        opt.zero_grad()
        tracer.step()
    tracer.finish()
    assert unchanged == [1]
    with open_store() as store:
        skipped = store.get_metric_timeseries(run.run_id, "optimizer/skipped_step")
        events = store.get_events(run.run_id, "optimizer_step_skipped")
    assert skipped["steps"] == [1]
    assert [e["data"] for e in events] == [{"reason": "nonfinite_gradients", "consecutive": 1}]
