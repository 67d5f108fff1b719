"""Detector plugins end to end: a real installed package, a broken one, and detector settings.

The example package (examples/tracer-example-detector) is pip-installed into a temporary
directory, exactly as a user's `pip install` would lay it out, and found through its
`tracer.plugins` entry point. Building it needs hatchling importable (tox's core environments
install it); without hatchling those tests skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.core.helpers import open_store
from tests.core.test_plugins import install_fake_distribution
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.exceptions import TrainingHalted
from tracer.plugins import reset_plugin_manager
from tracer.plugins.manager import get_plugin_manager
from tracer.testing import DetectorConformance, DetectorStream

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tracer-example-detector"

_MISSING = [m for m in ("hatchling", "pip") if importlib.util.find_spec(m) is None]
needs_build = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"installing the example detector package needs {' and '.join(_MISSING)} importable"
    " (pip install hatchling; tox's core environments have it)",
)

JUMP = 40  # the step the learning rate leaves its range
STEPS = 60


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, really installed (wheel built by hatchling) into a directory."""
    if _MISSING:
        pytest.skip(f"needs {_MISSING}")
    site = tmp_path_factory.mktemp("example") / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "tracer_example_detector" / "py.typed").is_file()
    return site


@pytest.fixture
def example_plugin(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The installed example on sys.path, and a plugin manager that has not looked yet."""
    monkeypatch.syspath_prepend(str(example_site))
    reset_plugin_manager()
    return example_site


def lr_at(step: int) -> float:
    """Warmup to 1e-3, 0.8 for five steps from JUMP (above max_lr=0.5), then 1e-3 again."""
    if JUMP <= step < JUMP + 5:
        return 0.8
    return min(1e-3, 1e-4 * (step + 1))


def train(steps: int = STEPS, lr: Any = lr_at, loss: Sequence[float] = ()) -> None:
    for step in range(steps):
        tracer.log({"loss": loss[step] if loss else 1.0 / (step + 1), "lr": lr(step)})
        tracer.step()


def stable(anomalies: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What online and offline detection must agree on (NaN-safe, order-free)."""
    keys = ("step", "anomaly_type", "subject", "severity", "message", "detector")
    numbers = ("value", "baseline", "threshold")
    return sorted(
        (*(a[k] for k in keys), *("nan" if a[n] != a[n] else a[n] for n in numbers))
        for a in anomalies
    )


def anomalies_of(run_id: str, types: Sequence[str] | None = None) -> list[dict[str, Any]]:
    with QueryEngine() as query:
        return query.get_anomalies(run_id, types)


def noisy(center: float, count: int, scale: float = 0.01) -> list[float]:
    return [center + scale * ((i * 7919) % 11 - 5) / 5 for i in range(count)]


# -- the installed example package ----------------------------------------------------------
@needs_build
@pytest.mark.parametrize("async_writes", [False, True])
def test_installed_detector_reports_online_and_offline_alike(
    example_plugin: Path, async_writes: bool
) -> None:
    registered = get_plugin_manager().detector_classes()["lr_out_of_range"]
    assert Path(sys.modules[registered.__module__].__file__ or "").is_relative_to(example_plugin)
    run = tracer.init(
        project="p",
        detectors={"lr_out_of_range": {"max_lr": 0.5}},
        track_system_metrics=False,
        async_writes=async_writes,
        write_buffer_size=7,
    )
    train()
    tracer.finish()

    online = anomalies_of(run.run_id)
    lr_found = [a for a in online if a["anomaly_type"] == "lr_out_of_range"]
    assert [(a["step"], a["subject"], a["severity"]) for a in lr_found] == [
        (JUMP, "lr", "critical")
    ]
    assert lr_found[0]["detector"] == "lr_out_of_range"
    assert lr_found[0]["value"] == 0.8 and lr_found[0]["threshold"] == 0.5
    with open_store() as store:
        offline = AnomalyDetector(store).detect_all_anomalies(run.run_id)
    assert stable(offline) == stable(online)


@needs_build
def test_installed_detector_can_halt_training(example_plugin: Path) -> None:
    run = tracer.init(
        project="p",
        detectors={"lr_out_of_range": {"max_lr": 0.5}},
        halt_on=["lr_out_of_range"],
        track_system_metrics=False,
        async_writes=False,
    )
    with pytest.raises(TrainingHalted):
        train()
    with open_store() as store:
        record = store.get_run(run.run_id)
    assert record is not None and record["status"] == "failed"
    assert record["total_steps"] == JUMP + 1  # stopped at the step after the jump


@needs_build
def test_autoload_disabled_leaves_the_installed_detector_out(
    example_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACER_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    assert "lr_out_of_range" not in get_plugin_manager().detector_classes()
    run = tracer.init(project="p", track_system_metrics=False)
    train(lr=lambda step: 5.0)
    tracer.finish()
    assert anomalies_of(run.run_id, ["lr_out_of_range"]) == []
    with pytest.raises(
        ValueError, match=r"unknown detector 'lr_out_of_range'.*installed: .*loss_spike"
    ):
        tracer.init(project="p", detectors={"lr_out_of_range": {"max_lr": 0.5}})


@needs_build
class TestInstalledExampleConformance(DetectorConformance):
    """The installed example detector passes the suite every built-in detector passes."""

    fault_types = ("lr_out_of_range",)

    @pytest.fixture(autouse=True)
    def _installed(self, example_plugin: Path) -> Iterator[None]:
        module = importlib.import_module("tracer_example_detector")
        type(self).detector_class = module.LearningRateRangeDetector
        yield

    def settings(self) -> dict[str, Any]:
        return {"max_lr": 0.5, "metrics": ["lr", "lr-*"]}

    def fault_stream(self) -> DetectorStream:
        steps = list(range(STEPS))
        lr = [lr_at(s) for s in steps]
        lr[50] = -1e-4  # below min_lr
        lr[55] = float("nan")  # nan_or_inf's, not this detector's
        return DetectorStream(series={"lr": (steps, lr), "lr-Adam/pg1": (steps, [0.9] * STEPS)})


# -- a broken detector plugin ----------------------------------------------------------------
BROKEN_PLUGIN = """
import tracer
from tracer.detection import Detector


class BrokenDetector(Detector):
    name = "broken_detector"
    anomaly_types = ("broken",)

    def wants(self, series):
        return series == "loss"

    def observe(self, series, steps, values):
        raise RuntimeError("bug in a detector plugin")


@tracer.hookimpl
def tracer_register_detectors(register):
    register(BrokenDetector)
"""


@pytest.mark.parametrize("async_writes", [False, True])
def test_a_raising_detector_is_switched_off_and_training_goes_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    async_writes: bool,
) -> None:
    install_fake_distribution(tmp_path / "site", monkeypatch, "broken_detector", BROKEN_PLUGIN)
    loss = [1.0 / (s + 1) for s in range(STEPS)]
    loss[20] = float("nan")
    with caplog.at_level(logging.ERROR):
        run = tracer.init(
            project="p",
            track_system_metrics=False,
            async_writes=async_writes,
            write_buffer_size=5,
        )
        train(loss=loss)
        tracer.finish()
    assert caplog.text.count("switched off") == 1
    assert "'broken_detector'" in caplog.text and "bug in a detector plugin" in caplog.text
    with open_store() as store:
        record = store.get_run(run.run_id)
    assert record is not None
    assert (record["status"], record["total_steps"]) == ("finished", STEPS)
    found = anomalies_of(run.run_id)
    assert [(a["step"], a["subject"]) for a in found if a["anomaly_type"] == "nan_or_inf"] == [
        (20, "loss")
    ]
    assert not [a for a in found if a["detector"] == "broken_detector"]


# -- detector settings through the config ---------------------------------------------------
def spike_loss() -> list[float]:
    loss = noisy(1.0, 100)
    loss[70] = 1.055  # about 6 robust sigmas: above 4, below the default 8
    return loss


def test_detector_settings_reach_the_detector() -> None:
    spikes = {}
    for settings in ({}, {"loss_spike": {"z_threshold": 4.0}}):
        run = tracer.init(project="p", detectors=settings, track_system_metrics=False)
        train(steps=100, loss=spike_loss(), lr=lambda step: 1e-3)
        tracer.finish()
        spikes[bool(settings)] = [a["step"] for a in anomalies_of(run.run_id, ["loss_spike"])]
        with open_store() as store:
            record = store.get_run(run.run_id)
        assert record is not None and record["settings"]["detectors"] == settings
    assert spikes == {False: [], True: [70]}


def test_a_detector_can_be_disabled() -> None:
    plateaus = {}
    for settings in ({}, {"loss_plateau": False}):
        run = tracer.init(project="p", detectors=settings, track_system_metrics=False)
        train(steps=200, loss=[1.0] * 200, lr=lambda step: 1e-3)
        tracer.finish()
        plateaus[bool(settings)] = len(anomalies_of(run.run_id, ["loss_plateau"]))
        with open_store() as store:
            offline = AnomalyDetector(store).detect_loss_anomalies(run.run_id)
        assert (
            len([a for a in offline if a["anomaly_type"] == "loss_plateau"])
            == plateaus[bool(settings)]
        )
    assert plateaus == {False: 1, True: 0}


@pytest.mark.parametrize(
    ("detectors", "message"),
    [
        ({"loss_spikes": {}}, r"did you mean 'loss_spike'"),
        ({"loss_spike": {"z_treshold": 4}}, r"'z_threshold'"),
        ({"gradients_not_reset": {"samples": "2"}}, r"'samples' must be int, got '2'"),
        ({"repeated_batch": {"samples": 2.5}}, r"'samples' must be int, got 2.5"),
        ({"loss_spike": {"z_threshold": True}}, r"must be int or float, got True"),
        ({"gradients_not_reset": {"samples": 0}}, r"'samples' must be at least 1, got 0"),
        ({"skipped_steps": {"steps": -3}}, r"'steps' must be at least 1, got -3"),
    ],
)
def test_a_misspelt_detector_or_setting_fails_init(detectors: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tracer.init(project="p", detectors=detectors)
    assert tracer.get_run() is None
    with open_store() as store:
        assert store.list_runs() == []


def test_halt_on_an_unknown_anomaly_type_fails_init() -> None:
    with pytest.raises(ValueError, match="no_such_type"):
        tracer.init(project="p", halt_on=["no_such_type"])
    assert tracer.get_run() is None
