"""Anomalies as episodes, rules that hold on runs of any length, and samples from the batch
that was trained on.

- A condition that lasts is one episode (start, end, count), closed when the run ends, the
  same online (writer thread) and offline (`AnomalyDetector`).
- A 200,000-step healthy loss (slow convergence under per-step noise, step-decay drops, a
  converged half) raises nothing shown by default; a single spike late in it is found.
- The samples stored at an anomaly are the training batch, not a later evaluation pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracer
from tests.core.helpers import open_store
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.detection.builtin import BUILTIN_DETECTORS
from tracer.detection.runner import DetectorSet, merge_episodes
from tracer.records import AnomalyWrite

SHOWN = ("warning", "critical")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


def _long_healthy_loss(steps: int, seed: int) -> list[float]:
    """Slowly converging, noisy, with three step-decay drops and a flat second half."""
    rng = random.Random(seed)
    losses = []
    for step in range(steps):
        level = 0.5 + 2.0 * math.exp(-min(step, steps // 2) / 40_000)
        level *= 0.7 ** sum(step >= drop for drop in (steps // 8, steps // 4, steps * 3 // 8))
        losses.append(level * rng.lognormvariate(0.0, 0.25))
    return losses


def _replay(losses: list[float], flush: int = 100) -> list[AnomalyWrite]:
    """Every built-in detector over the series, fed flush by flush as the writer does."""
    runner = DetectorSet("long", [cls() for cls in BUILTIN_DETECTORS])
    found: list[AnomalyWrite] = []
    for start in range(0, len(losses), flush):
        steps = list(range(start, min(start + flush, len(losses))))
        found += runner.feed({"loss": (steps, losses[start : start + flush])})
    found += runner.finish()
    return merge_episodes(found)


def test_a_long_healthy_run_raises_nothing_shown_and_finds_its_one_spike() -> None:
    """The false-alarm rate must not grow with the run: 200,000 noisy steps stay quiet."""
    losses = _long_healthy_loss(200_000, seed=3)
    shown = [a for a in _replay(losses) if a["severity"] in SHOWN]
    assert shown == [], shown[:5]
    losses[180_000] *= 20.0
    (spike,) = [a for a in _replay(losses) if a["severity"] in SHOWN]
    assert (spike["anomaly_type"], spike["step"], spike["count"]) == ("loss_spike", 180_000, 1)


def test_a_lasting_nan_is_one_episode_online_and_offline() -> None:
    """NaN from step 50 to the end: one nan_or_inf episode spanning it, closed at finish."""
    run = tracer.init(project="episodes", track_system_metrics=False)
    for step in range(300):
        tracer.log({"loss": math.nan if step >= 50 else 1.0 / (step + 1)})
        tracer.step()
    tracer.finish()
    with QueryEngine() as query:
        online = query.get_anomalies(run.run_id, ["nan_or_inf"])
    assert [(a["step"], a["end_step"], a["count"], a["open"]) for a in online] == [
        (50, 299, 250, False)
    ]
    assert online[0]["hint"]  # what to try
    with open_store() as store:
        offline = AnomalyDetector(store).detect_nan_inf(run.run_id)
    assert [(a["step"], a["end_step"], a["count"]) for a in offline] == [(50, 299, 250)]


def test_samples_at_an_anomaly_are_the_training_batch() -> None:
    """An evaluation forward under no_grad after the step's training forward does not replace
    the batch trained on: the anomaly checkpoint stores the training inputs."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    run = tracer.init(project="samples", capture_samples=2, track_system_metrics=False)
    tracer.watch(model, optimizer=optimizer)
    evaluation = torch.full((7, 4), 5.0)
    for step in range(120):
        batch = torch.full((3, 4), float(step % 7))
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            model(evaluation)
        tracer.log({"loss": 1000.0 if step == 100 else 1.0 + 0.01 * (step % 3)})
        tracer.step()
    tracer.finish()
    with open_store() as store:
        samples = [s for s in store.get_samples(run.run_id, 100) if s["reason"] == "anomaly"]
    inputs = [s for s in samples if s["role"] == "input"]
    assert inputs, samples
    assert inputs[0]["shape"] == [3, 4]  # the training batch, not the 7-row evaluation
    assert inputs[0]["values"][0] == [float(100 % 7)] * 4


def test_a_plateau_without_an_lr_series_is_judged_online_not_only_at_the_end() -> None:
    """A run that logs no learning rate: the plateau detector used to wait for an lr series
    that never came, keeping every block of the run and judging them all in finish() (0.65 s
    at 3M steps, memory growing with the run). Now it stops waiting after a while: a stalled
    loss is reported while the run trains, and finish() has little left to judge."""
    from tracer.detection.plateau import LossPlateauDetector

    runner = DetectorSet("flat", [LossPlateauDetector()])
    online: list[AnomalyWrite] = []
    rng = random.Random(0)
    for start in range(0, 60_000, 100):
        steps = list(range(start, start + 100))
        online += runner.feed({"loss": (steps, [1.0 + rng.gauss(0, 0.01) for _ in steps])})
    at_end = runner.finish()
    assert "loss_plateau" in {a["anomaly_type"] for a in online}
    plateau = [a for a in at_end if a["anomaly_type"] == "loss_plateau"]
    assert all(not a["open"] for a in plateau)  # finish only closes the episode it had open
    assert len(at_end) <= 2
