"""Every example of ../shared/SEED-API.md (Core API, Configuration, Storage Backend,
Exceptions, Type Hints), run as written. `tracer.watch` arrives with gradient capture."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

import tracer
from tests.core.helpers import open_store, series

if TYPE_CHECKING:
    from tracer.config import TracerConfig
    from tracer.core.tracer import TrainingTracer


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
