"""Third-party collectors from entry-point plugins: their data, and their faults kept away
from training.

Each plugin is a real installed distribution (see `install_fake_distribution`) whose module
implements `tracer_register_collectors`; module-level lists record what the run called.
"""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import tracer
from tests.core.helpers import open_store, series
from tests.core.test_plugins import install_fake_distribution
from tracer.capture.collector import MAX_FAILURES
from tracer.records import CheckpointRecord

Installer = Callable[[str, str], ModuleType]

# A healthy per-step collector. `per_step` is a class attribute because `CollectorSet`
# computes its `stepping` list when it is built in `tracer.init` (and again in `watch()`,
# which these tests never call): setting it later on the instance would not be seen.
PROBE = """
from __future__ import annotations

import tracer
from tracer.capture.collector import Collected, Collector

steps_seen: list[int] = []
closed: list[bool] = []


class Probe(Collector):
    per_step = True

    def __init__(self, run):
        self.run = run

    def on_step_end(self, step):
        steps_seen.append(step)
        self.run.submit_background(Collected([(step, {"probe/value": float(step)})]))

    def checkpoint(self, step, reason):
        return {"probe": {"seen": step}}

    def close(self):
        closed.append(True)


def probe_factory(run):
    return Probe(run)
"""


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installer]:
    """Install a plugin distribution `module` with `source`; return its (imported) module.

    The module is dropped from `sys.modules` afterwards so no later test sees its state.
    """
    installed: list[str] = []

    def install(module: str, source: str) -> ModuleType:
        install_fake_distribution(tmp_path / "site", monkeypatch, module, source)
        installed.append(module)
        return importlib.import_module(module)

    yield install
    for module in installed:
        sys.modules.pop(module, None)


def loop(steps: int) -> None:
    """A training loop without a model: one `loss` per step."""
    for i in range(steps):
        tracer.log({"loss": float(i)})
        tracer.step()


def stored_run(run_id: str) -> tuple[str, list[CheckpointRecord]]:
    """The run's status and its checkpoints."""
    with open_store() as store:
        record = store.get_run(run_id)
        assert record is not None
        return record["status"], store.get_checkpoints(run_id)


def test_a_plugin_collector_adds_a_series_and_a_checkpoint_section(
    install_plugin: Installer,
) -> None:
    """Contract: a collector registered through `tracer_register_collectors` by an installed
    plugin is built for each run; with `per_step` its `on_step_end` sees every step, and what
    it hands `submit_background` is stored as a series (and, being a snapshot, in the
    checkpoint's latest metrics); its `checkpoint()` sections land under `extra` by name;
    `close()` is called once at finish."""
    plugin = install_plugin(
        "probe_plugin",
        PROBE
        + textwrap.dedent("""
            @tracer.hookimpl
            def tracer_register_collectors(register):
                register("probe", probe_factory)
        """),
    )
    run = tracer.init(
        project="p", checkpoint_interval=5, capture_samples=0, track_system_metrics=False
    )
    total = 13
    loop(total)
    tracer.finish()

    assert plugin.steps_seen == list(range(total))
    assert plugin.closed == [True]
    probe = series(run.run_id, "probe/value")
    assert probe["steps"] == list(range(total))
    assert probe["values"] == [float(step) for step in range(total)]
    assert series(run.run_id, "loss")["steps"] == list(range(total))
    status, checkpoints = stored_run(run.run_id)
    assert status == "finished"
    assert [(c["step"], c["reason"]) for c in checkpoints] == [
        (5, "interval"),
        (10, "interval"),
        (12, "finish"),
    ]
    for checkpoint in checkpoints:
        assert checkpoint["extra"] == {"probe": {"seen": checkpoint["step"]}}
        # on_step_end runs before the checkpoint of the same step is taken
        assert checkpoint["metrics"]["probe/value"] == float(checkpoint["step"])


FLAKY = """
attempts: list[int] = []
flaky_closed: list[bool] = []


class Flaky(Collector):
    per_step = True

    def on_step_end(self, step):
        attempts.append(step)
        raise RuntimeError(f"flaky collector bug at step {step}")

    def close(self):
        flaky_closed.append(True)
"""


def test_a_collector_failing_every_step_is_reported_once_and_switched_off(
    install_plugin: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract: a collector raising in `on_step_end` never stops training; its first error is
    logged once (with traceback), after MAX_FAILURES (3) failures it is switched off (logged,
    closed once, never called again), every logged point is stored, the run finishes."""
    plugin = install_plugin(
        "flaky_plugin",
        PROBE
        + FLAKY
        + textwrap.dedent("""
            @tracer.hookimpl
            def tracer_register_collectors(register):
                register("flaky", lambda run: Flaky())
        """),
    )
    run = tracer.init(
        project="p", checkpoint_interval=5, capture_samples=0, track_system_metrics=False
    )
    with caplog.at_level(logging.WARNING, logger="tracer"):
        loop(20)
        tracer.finish()

    assert MAX_FAILURES == 3
    assert plugin.attempts == [0, 1, 2]
    assert plugin.flaky_closed == [True]  # closed when switched off, not again at finish
    assert caplog.text.count("'flaky' failed in on_step_end") == 1
    assert caplog.text.count("flaky collector bug at step 0") == 1  # the traceback, once
    assert caplog.text.count("switched off") == 1
    assert "'flaky' failed 3 times and is switched off" in caplog.text
    loss = series(run.run_id, "loss")
    assert loss["steps"] == list(range(20))
    assert loss["values"] == [float(i) for i in range(20)]
    status, checkpoints = stored_run(run.run_id)
    assert status == "finished"
    assert [c["step"] for c in checkpoints] == [5, 10, 15, 19]


def test_switching_off_a_collector_does_not_skip_the_next_one(
    install_plugin: Installer,
) -> None:
    """Contract: switching off a failing collector leaves the other collectors untouched; a
    healthy per-step collector registered after it still sees every step."""
    plugin = install_plugin(
        "flaky_and_probe_plugin",
        PROBE
        + FLAKY
        + textwrap.dedent("""
            @tracer.hookimpl
            def tracer_register_collectors(register):
                register("flaky", lambda run: Flaky())
                register("probe", probe_factory)
        """),
    )
    run = tracer.init(
        project="p", checkpoint_interval=5, capture_samples=0, track_system_metrics=False
    )
    loop(6)
    tracer.finish()

    assert plugin.attempts == [0, 1, 2]
    assert plugin.steps_seen == list(range(6))  # fails today: [0, 1, 3, 4, 5]
    assert series(run.run_id, "probe/value")["steps"] == list(range(6))


def test_a_collector_factory_that_raises_is_skipped_and_the_run_goes_on(
    install_plugin: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract: a factory raising in `tracer.init` is logged (naming the collector) and
    skipped; the run starts, logs, checkpoints and finishes, and the other collectors run."""
    plugin = install_plugin(
        "broken_factory_plugin",
        PROBE
        + textwrap.dedent("""
            def broken_factory(run):
                raise RuntimeError("factory bug")


            @tracer.hookimpl
            def tracer_register_collectors(register):
                register("broken", broken_factory)
                register("probe", probe_factory)
        """),
    )
    with caplog.at_level(logging.WARNING, logger="tracer"):
        run = tracer.init(
            project="p", checkpoint_interval=5, capture_samples=0, track_system_metrics=False
        )
        assert run.state == "active"
        loop(7)
        tracer.finish()

    assert "Tracer collector 'broken' failed to start; it is skipped." in caplog.text
    assert "factory bug" in caplog.text
    assert series(run.run_id, "loss")["steps"] == list(range(7))
    assert plugin.steps_seen == list(range(7))
    status, checkpoints = stored_run(run.run_id)
    assert status == "finished"
    assert [(c["step"], c["extra"]) for c in checkpoints] == [
        (5, {"probe": {"seen": 5}}),
        (6, {"probe": {"seen": 6}}),
    ]


def test_a_section_function_failing_on_the_writer_thread_only_loses_that_section(
    install_plugin: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract: a checkpoint section given as a function is called on the writer thread;
    when it raises, the checkpoint is still stored with every other section, and one warning
    names the section however many checkpoints fail."""
    plugin = install_plugin(
        "bad_section_plugin",
        textwrap.dedent("""
            import threading

            import tracer
            from tracer.capture.collector import Collector

            threads: list[str] = []


            class BadSection(Collector):
                def checkpoint(self, step, reason):
                    def broken():
                        threads.append(threading.current_thread().name)
                        raise ValueError(f"section bug at {step}")

                    return {"probe": broken, "probe_ok": lambda: {"seen": step}}


            @tracer.hookimpl
            def tracer_register_collectors(register):
                register("bad_section", lambda run: BadSection())
        """),
    )
    with caplog.at_level(logging.WARNING, logger="tracer"):
        run = tracer.init(
            project="p", checkpoint_interval=5, capture_samples=0, track_system_metrics=False
        )
        loop(12)
        tracer.finish()

    assert len(plugin.threads) == 3
    assert all(name.startswith("tracer-writer-") for name in plugin.threads), plugin.threads
    warnings = [r for r in caplog.records if "could not collect probe:" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "ValueError: section bug at 5" in warnings[0].getMessage()
    status, checkpoints = stored_run(run.run_id)
    assert status == "finished"
    assert [(c["step"], c["reason"]) for c in checkpoints] == [
        (5, "interval"),
        (10, "interval"),
        (11, "finish"),
    ]
    for checkpoint in checkpoints:
        assert checkpoint["extra"] == {"probe_ok": {"seen": checkpoint["step"]}}
        assert checkpoint["metrics"]["loss"] == float(checkpoint["step"])
    assert series(run.run_id, "loss")["steps"] == list(range(12))
