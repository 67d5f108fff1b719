"""Every example of ../shared/SEED-API.md (Core API, Configuration, Analysis API, Storage
Backend, Exceptions, Type Hints), run as written. `tracer.watch` arrives with gradient capture.

The Analysis API examples name runs "abc-123", "run1" and "run2": here those are run names
(as in the Storage Backend example, where "run1" is a name and "123" the id); QueryEngine
and AnomalyDetector accept an id or a name wherever the reference says `run_id`."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

import tracer
from tests.core.helpers import open_store, series

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.core.tracer import TrainingTracer
    from tracer.storage import StorageBackend


def test_init_example() -> None:
    tracer.init(
        project="gpt-finetuning",
        run_name="experiment-001",
        checkpoint_interval=500,
        track_gradients=True
    )  # fmt: skip
    run = tracer.get_run()
    assert run is not None
    assert run.run_name == "experiment-001"
    assert run.config.project_name == "gpt-finetuning"
    assert run.config.checkpoint_interval == 500
    tracer.finish()
    with open_store() as store:
        (stored,) = store.list_runs(project_name="gpt-finetuning")
    assert stored["run_name"] == "experiment-001" and stored["status"] == "finished"


def test_log_example() -> None:
    run = tracer.init(project="p")
    tracer.log({
        "loss": 2.34,
        "accuracy": 0.89,
        "learning_rate": 1e-4
    })  # fmt: skip
    tracer.finish()
    assert series(run.run_id, "loss") == {"steps": [0], "values": [2.34]}
    assert series(run.run_id, "learning_rate") == {"steps": [0], "values": [1e-4]}


def test_step_example_with_a_real_training_loop() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dataloader = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(25)]

    def train_step(batch: tuple) -> torch.Tensor:
        inputs, targets = batch
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    run = tracer.init(project="p", checkpoint_interval=10)
    for batch in dataloader:
        loss = train_step(batch)
        tracer.log({"loss": loss.item()})
        tracer.step()  # Auto-checkpoints based on interval
    tracer.finish()
    stored = series(run.run_id, "loss")
    assert stored["steps"] == list(range(25))
    with open_store() as store:
        checkpoints = store.get_checkpoints(run.run_id)
    assert [(c["step"], c["reason"]) for c in checkpoints] == [
        (10, "interval"),
        (20, "interval"),
        (24, "finish"),
    ]


def test_finish_example() -> None:
    run = tracer.init(project="p")

    def train() -> None:
        tracer.log({"loss": 1.0})
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        try:
            # Training loop
            train()
        finally:
            tracer.finish()  # Always cleanup
    assert series(run.run_id, "loss")["values"] == [1.0]


def test_tracer_config_example() -> None:
    from tracer import TracerConfig

    config = TracerConfig(
        # Project metadata
        project_name="demo",
        run_name=None,
        tags=[],
        notes=None,

        # Storage
        storage_path="./.tracer",
        retention_days=30,

        # Capture settings
        checkpoint_interval=1000,
        capture_samples=5,
        track_gradients=True,
        track_system_metrics=True,

        # Gradient tracking
        gradient_layers=None,

        # Performance
        async_writes=True,
        write_buffer_size=100,
        max_workers=4,
    )  # fmt: skip
    assert config == TracerConfig(project_name="demo")  # the example spells out the defaults
    from tracer.config import TracerConfig as SameClass

    assert SameClass is TracerConfig


# -- Analysis API ---------------------------------------------------------------------------
def _train(run_name: str, losses: Sequence[float], project: str = "p") -> str:
    """A finished run of `project` logging loss and accuracy at each step; returns its id."""
    run = tracer.init(
        project=project, run_name=run_name, checkpoint_interval=10, track_system_metrics=False
    )
    for i, loss in enumerate(losses):
        tracer.log({"loss": loss, "accuracy": i / len(losses)})
        tracer.step()
    tracer.finish()
    return run.run_id


def test_query_engine_get_run_summary_example(capsys: pytest.CaptureFixture[str]) -> None:
    """`get_run_summary("abc-123")` answers for the run named abc-123, and the two prints
    show its step count and its last value of each metric."""
    run_id = _train("abc-123", [1.0 / (i + 1) for i in range(25)])

    # fmt: off
    from tracer.analysis import QueryEngine

    query = QueryEngine(storage_path="./.tracer")
    summary = query.get_run_summary("abc-123")
    print(summary["total_steps"])
    print(summary["final_metrics"])
    # fmt: on

    final = {"accuracy": 24 / 25, "loss": 1.0 / 25}
    assert capsys.readouterr().out == f"25\n{final}\n"
    assert summary["run_id"] == run_id and summary["status"] == "finished"
    query.close()


def test_query_engine_compare_runs_example() -> None:
    """`compare_runs("run1", "run2", metrics=[...])` compares the two named runs metric by
    metric: identical accuracy never diverges, a loss 20% higher from step 12 diverges
    there."""
    losses = [1.0 / (i + 1) for i in range(30)]
    id1 = _train("run1", losses)
    id2 = _train("run2", [v * 1.2 if i >= 12 else v for i, v in enumerate(losses)])
    from tracer.analysis import QueryEngine

    query = QueryEngine(storage_path="./.tracer")

    # fmt: off
    comparison = query.compare_runs(
        "run1", "run2",
        metrics=["loss", "accuracy"]
    )
    # fmt: on

    assert (comparison["run1"], comparison["run2"]) == (id1, id2)
    loss, accuracy = comparison["metrics"]["loss"], comparison["metrics"]["accuracy"]
    assert loss["first_divergence_step"] == 12
    assert math.isclose(loss["delta"], 0.2 / 30)
    assert loss["run1"]["count"] == loss["run2"]["count"] == 30
    assert accuracy["first_divergence_step"] is None and accuracy["delta"] == 0.0
    query.close()


def test_query_engine_find_anomalous_checkpoints_example() -> None:
    """A NaN loss at step 15 is found online as `nan_or_inf`; the example lists the checkpoint
    it is linked to (the one the anomaly itself triggered, at step 15)."""
    _train("run1", [math.nan if i == 15 else 1.0 / (i + 1) for i in range(30)])
    from tracer.analysis import QueryEngine

    query = QueryEngine(storage_path="./.tracer")

    # fmt: off
    anomalies = query.find_anomalous_checkpoints(
        "run1",
        anomaly_types=["gradient_explosion", "nan_or_inf"]
    )
    # fmt: on

    assert [c["step"] for c in anomalies] == [15]
    (found,) = anomalies[0]["anomalies"]
    assert (found["anomaly_type"], found["step"], found["details"]["subject"]) == (
        "nan_or_inf",
        15,
        "loss",
    )
    query.close()


ANOMALY_KEYS = {"run_id", "step", "anomaly_type", "severity", "details"}


def _troubled_run(storage: StorageBackend) -> None:
    """Run "run1" (id "123"): a loss spike at 100, a gradient explosion at 120, a memory jump
    at 130 and a NaN loss at 150, written straight to storage (no online detection)."""
    storage.create_run(
        run_id="123", project_name="test", run_name="run1", start_time=1000.0, config={}
    )
    rng = random.Random(0)
    steps = list(range(200))
    loss = [1.0 + 0.01 * rng.random() for _ in steps]
    loss[100], loss[150] = 50.0, math.nan
    grad = [1.0 + 0.01 * rng.random() for _ in steps]
    grad[120] = 1000.0
    rss = [(1000.0 if step < 130 else 3000.0) + rng.random() for step in steps]
    storage.write_metrics(
        "123",
        {
            "loss": (steps, loss),
            "grad/global_norm": (steps, grad),
            "system/process_rss_mb": (steps, rss),
        },
    )


def test_anomaly_detector_example() -> None:
    """`detect_all_anomalies("run1")` replays the stored run through every detector and
    `store_anomalies` stores what it found, once: storing again adds nothing."""
    from tracer.config import TracerConfig
    from tracer.storage import StorageBackend

    storage_backend = StorageBackend(TracerConfig(project_name="test"))
    _troubled_run(storage_backend)

    # fmt: off
    from tracer.analysis import AnomalyDetector

    detector = AnomalyDetector(storage_backend)

    anomalies = detector.detect_all_anomalies("run1")
    detector.store_anomalies(anomalies)
    # fmt: on

    serious = [(a["step"], a["anomaly_type"]) for a in anomalies if a["severity"] != "info"]
    assert serious == [
        (100, "loss_spike"),
        (120, "gradient_explosion"),
        (130, "memory_spike"),
        (150, "nan_or_inf"),
    ]
    # the loss is flat noise from the start: at most an info-level plateau (with no lr logged
    # its verdict waits for the end of the run, and this run is still "running")
    assert {a["anomaly_type"] for a in anomalies if a["severity"] == "info"} <= {"loss_plateau"}
    assert all(a["run_id"] == "123" for a in anomalies)  # the name resolved to the id
    stored = storage_backend.get_anomalies("123")
    assert [(a["step"], a["anomaly_type"]) for a in stored] == [
        (a["step"], a["anomaly_type"]) for a in anomalies
    ]
    assert detector.store_anomalies(anomalies) == 0
    assert len(storage_backend.get_anomalies("123")) == len(anomalies)
    storage_backend.close()


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("detect_gradient_anomalies", [(120, "gradient_explosion")]),
        ("detect_loss_anomalies", [(100, "loss_spike")]),
        ("detect_nan_inf", [(150, "nan_or_inf")]),
        ("detect_memory_spikes", [(130, "memory_spike")]),
    ],
)
def test_anomaly_detector_methods(method: str, expected: list[tuple[int, str]]) -> None:
    """Each `detect_*` method of the reference returns a list of dicts with at least run_id,
    step, anomaly_type, severity and details, holding only its own kinds of anomaly."""
    from tracer.analysis import AnomalyDetector
    from tracer.config import TracerConfig
    from tracer.storage import StorageBackend

    storage_backend = StorageBackend(TracerConfig(project_name="test"))
    _troubled_run(storage_backend)
    detector = AnomalyDetector(storage_backend)
    anomalies = getattr(detector, method)("run1")
    assert isinstance(anomalies, list)
    serious = [(a["step"], a["anomaly_type"]) for a in anomalies if a["severity"] != "info"]
    assert serious == expected
    for anomaly in anomalies:
        assert isinstance(anomaly, dict) and set(anomaly) >= ANOMALY_KEYS
        assert anomaly["run_id"] == "123"
        assert anomaly["severity"] in ("info", "warning", "critical")
        assert isinstance(anomaly["details"], dict) and anomaly["details"]["message"]
    storage_backend.close()


def test_storage_backend_example() -> None:
    from tracer.config import TracerConfig
    from tracer.storage import StorageBackend

    config = TracerConfig(project_name="test")
    storage = StorageBackend(config)

    # fmt: off
    # Create run
    storage.create_run(
        run_id="123",
        project_name="test",
        run_name="run1",
        start_time=1000.0,
        config={}
    )

    # Write checkpoint
    storage.write_checkpoint(
        run_id="123",
        step=100,
        timestamp=1100.0,
        metrics={"loss": 0.5},
        gradient_stats={},
        system_metrics={}
    )

    # Query
    runs = storage.list_runs(project_name="test")
    checkpoints = storage.get_checkpoints("123")
    # fmt: on
    assert [r["run_id"] for r in runs] == ["123"]
    assert checkpoints[0]["step"] == 100 and checkpoints[0]["metrics"] == {"loss": 0.5}
    storage.close()


def test_exceptions_example(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        tracer.log({"loss": 1.0})
    except RuntimeError as e:  # noqa: F841 (the example, verbatim)
        print("Tracer not initialized!")
    assert capsys.readouterr().out == "Tracer not initialized!\n"


def test_type_hints_example_passes_mypy(tmp_path: object) -> None:
    pytest.importorskip("mypy")
    snippet = textwrap.dedent(
        """
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from tracer.config import TracerConfig
            from tracer.core.tracer import TrainingTracer

        def start(config: "TracerConfig") -> "TrainingTracer":
            from tracer.core.tracer import TrainingTracer
            return TrainingTracer(config)
        """
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "-c", snippet],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_type_hints_names_resolve() -> None:
    from tracer.config import TracerConfig as Config
    from tracer.core.tracer import TrainingTracer as Tracer

    run: TrainingTracer = tracer.init(project="p")
    config: TracerConfig = run.config
    assert isinstance(run, Tracer) and isinstance(config, Config)
