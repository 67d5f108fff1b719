"""The plugin system: entry-point discovery, the switches, validation and fault isolation."""

from __future__ import annotations

import inspect
import logging
import textwrap
from pathlib import Path

import pluggy
import pytest

import tracer
from tracer.analysis import QueryEngine
from tracer.exceptions import StorageError
from tracer.plugins import get_plugin_manager, hookspecs, reset_plugin_manager

PLUGIN_SOURCE = '''
from __future__ import annotations

import tracer
from tracer.storage.sqlite import SQLiteStorage

CALLS: list[tuple] = []


class AltStorage(SQLiteStorage):
    """SQLite under an alt:// scheme, standing in for a third-party backend."""

    def __init__(self, config):
        super().__init__(config.model_copy(update={"storage_path": config.storage_path[6:]}))


@tracer.hookimpl
def tracer_register_storage(register):
    register("alt", AltStorage)


@tracer.hookimpl
def tracer_run_start(run):
    CALLS.append(("start", run.run_id))


@tracer.hookimpl
def tracer_checkpoint_written(run, step, reason):
    CALLS.append(("checkpoint", step, reason))


@tracer.hookimpl
def tracer_run_end(run, status):
    CALLS.append(("end", status))
'''


def install_fake_distribution(
    site: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str
) -> None:
    """A real installed distribution on sys.path with a `tracer.plugins` entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tracer.plugins]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    reset_plugin_manager()


@pytest.fixture
def alt_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    install_fake_distribution(tmp_path / "site", monkeypatch, "tracer_alt_plugin", PLUGIN_SOURCE)
    import importlib

    return importlib.import_module("tracer_alt_plugin")


def test_every_hook_is_prefixed_typed_and_documented() -> None:
    hooks = [
        (name, fn)
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, "tracer_spec")
    ]
    assert {name for name, _ in hooks} == {
        "tracer_register_storage",
        "tracer_register_collectors",
        "tracer_register_detectors",
        "tracer_anomaly",
        "tracer_run_start",
        "tracer_checkpoint_written",
        "tracer_run_end",
    }
    for name, fn in hooks:
        assert name.startswith("tracer_")
        assert "called" in (fn.__doc__ or "").lower(), f"{name} must say when it is called"
        assert all(
            p.annotation is not inspect.Parameter.empty
            for p in inspect.signature(fn).parameters.values()
        )


def test_entry_point_plugin_adds_a_backend_and_sees_the_lifecycle(
    alt_plugin: object, tmp_path: Path
) -> None:
    run = tracer.init(project="p", storage_path=f"alt://{tmp_path / 'alt'}", checkpoint_interval=2)
    for _ in range(3):
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()
    assert (tmp_path / "alt" / "tracer.db").exists()
    with QueryEngine(storage_path=f"alt://{tmp_path / 'alt'}") as query:  # by location
        assert [r["run_id"] for r in query.list_runs()] == [run.run_id]
    assert [  # type: ignore[attr-defined]
        ("start", run.run_id),
        ("checkpoint", 2, "interval"),
        ("checkpoint", 2, "finish"),
        ("end", "finished"),
    ] == alt_plugin.CALLS


def test_a_plugin_registered_after_the_first_run_is_still_seen(tmp_path: Path) -> None:
    """The registries are built on first use; registering later must not be ignored."""
    tracer.init(project="p", storage_path=str(tmp_path / "first"))
    tracer.finish()
    manager = get_plugin_manager()
    assert "alt" not in manager.storage_backends()
    namespace: dict[str, object] = {}
    exec(compile(PLUGIN_SOURCE, "late_plugin", "exec"), namespace)
    plugin = type("LatePlugin", (), {})()
    for name in ("tracer_register_storage", "tracer_run_start", "tracer_run_end"):
        setattr(plugin, name, namespace[name])
    manager.register(plugin, name="late")
    run = tracer.init(project="p", storage_path=f"alt://{tmp_path / 'alt'}")
    tracer.finish()
    assert (tmp_path / "alt" / "tracer.db").exists()
    assert namespace["CALLS"] == [("start", run.run_id), ("end", "finished")]
    manager.unregister(name="late")
    with pytest.raises(StorageError, match="no storage backend handles alt://"):
        tracer.init(project="p", storage_path=f"alt://{tmp_path / 'alt'}")


def test_a_missing_project_backend_is_named_with_its_package_and_no_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACER_DISABLE_PLUGIN_AUTOLOAD", "1")  # as if tracer-postgres were absent
    reset_plugin_manager()
    with pytest.raises(StorageError) as raised:
        tracer.init(project="p", storage_path="postgresql://alice:s3cret@db.example/tracer")
    message = str(raised.value)
    assert "pip install tracer-postgres" in message
    assert "s3cret" not in message and "alice:***@db.example" in message


def test_autoload_can_be_switched_off(
    alt_plugin: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACER_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    with pytest.raises(StorageError, match="no storage backend handles alt://"):
        tracer.init(project="p", storage_path=f"alt://{tmp_path}")
    assert get_plugin_manager().get_plugin("tracer_alt_plugin") is None


def test_a_plugin_can_be_blocked_by_name(
    alt_plugin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACER_BLOCK_PLUGINS", "something-else, tracer_alt_plugin")
    reset_plugin_manager()
    manager = get_plugin_manager()
    assert manager.is_blocked("tracer_alt_plugin")
    assert manager.get_plugin("tracer_alt_plugin") is None
    assert "alt" not in manager.storage_backends()


def test_a_typo_in_a_hook_implementation_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = textwrap.dedent("""
        import tracer

        @tracer.hookimpl
        def tracer_run_strat(run):
            pass
    """)
    install_fake_distribution(tmp_path / "site", monkeypatch, "typo_plugin", source)
    with pytest.raises(pluggy.PluginValidationError, match="tracer_run_strat"):
        tracer.init(project="p")


def test_a_failing_plugin_never_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = textwrap.dedent("""
        import tracer

        @tracer.hookimpl
        def tracer_run_start(run):
            raise RuntimeError("plugin bug")

        @tracer.hookimpl
        def tracer_run_end(run, status):
            raise RuntimeError("plugin bug at end")
    """)
    install_fake_distribution(tmp_path / "site", monkeypatch, "broken_plugin", source)
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            tracer.init(project="p")
            tracer.log({"loss": 1.0})
            tracer.step()
            tracer.finish()
    assert caplog.text.count("failed in tracer_run_start") == 1  # reported once
    assert "failed in tracer_run_end" in caplog.text


def test_hook_calls_can_be_traced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRACER_TRACE_HOOKS", "1")
    reset_plugin_manager()
    with caplog.at_level(logging.DEBUG, logger="tracer.hooks"):
        tracer.init(project="p")
        tracer.finish()
    assert "tracer_run_start" in caplog.text and "tracer_run_end" in caplog.text


def test_registering_a_scheme_twice_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = textwrap.dedent("""
        import tracer
        from tracer.storage.sqlite import SQLiteStorage

        class Other(SQLiteStorage):
            pass

        @tracer.hookimpl
        def tracer_register_storage(register):
            register("sqlite", Other)
    """)
    install_fake_distribution(tmp_path / "site", monkeypatch, "clash_plugin", source)
    with pytest.raises(ValueError, match="registered twice"):
        tracer.init(project="p")


def test_the_anomaly_hook_fires_once_per_anomaly_found_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = textwrap.dedent("""
        import tracer

        SEEN = []

        @tracer.hookimpl
        def tracer_anomaly(run, anomaly):
            SEEN.append((run.run_id, anomaly["anomaly_type"], anomaly["step"], anomaly["subject"]))
    """)
    install_fake_distribution(tmp_path / "site", monkeypatch, "alert_plugin", source)
    import importlib

    plugin = importlib.import_module("alert_plugin")
    run = tracer.init(project="p", write_buffer_size=1)
    for step in range(40):
        tracer.log({"loss": float("nan") if step in (30, 31) else 1.0 / (step + 1)})
        tracer.step()
    tracer.finish()
    seen = plugin.SEEN  # type: ignore[attr-defined]
    assert seen == [(run.run_id, "nan_or_inf", 30, "loss")]  # one episode, one call


def test_the_anomaly_hook_fires_when_an_episode_turns_worse_and_for_episodes_found_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A climb that opens as a warning and passes (1 + critical_rise) x its reference is
    announced again as critical; a plateau the detectors judge only when the run ends (no lr
    logged, fewer blocks than they wait for) is announced then."""
    source = textwrap.dedent("""
        import tracer

        SEEN = []

        @tracer.hookimpl
        def tracer_anomaly(run, anomaly):
            SEEN.append((anomaly["anomaly_type"], anomaly["step"], anomaly["severity"]))
    """)
    install_fake_distribution(tmp_path / "site", monkeypatch, "worse_plugin", source)
    import importlib
    import random

    plugin = importlib.import_module("worse_plugin")
    noise = random.Random(0)
    run = tracer.init(project="p", detectors={"loss_plateau": False})
    for step in range(400):  # flat, then a climb of 3% a step from step 200
        climb = 1.03 ** max(0, step - 200)
        tracer.log({"loss": (1.0 + 0.01 * noise.gauss(0, 1)) * climb})
        tracer.step()
        run.flush()  # one step per batch: the episode is seen as it opens, then as it worsens
    tracer.finish()
    divergence = [s for s in plugin.SEEN if s[0] == "loss_divergence"]  # type: ignore[attr-defined]
    assert [severity for _, _, severity in divergence] == ["warning", "critical"]
    assert len({start for _, start, _ in divergence}) == 1  # one episode, announced twice

    plugin.SEEN.clear()  # type: ignore[attr-defined]
    tracer.init(project="p", write_buffer_size=1)
    for step in range(300):  # improves for 100 steps, then flat: a plateau, no lr logged
        tracer.log({"loss": max(1.0, 3.0 - step / 50) + 0.001 * noise.gauss(0, 1)})
        tracer.step()
    assert not [s for s in plugin.SEEN if s[0] == "loss_plateau"]  # type: ignore[attr-defined]
    tracer.finish()
    assert [s[0] for s in plugin.SEEN] == ["loss_plateau"]  # type: ignore[attr-defined]
