"""One adapter per tool, all with the same interface, each used as its documentation shows.

- start(run_dir): open a run whose files live under run_dir (trackio: under TRACKIO_DIR,
  a project named after run_dir);
- log(step, values): log three scalars for one step, the tool's ordinary per-step call;
- finish(): close the run the ordinary way;
- read_back(run_dir): how many steps hold a `loss` value, read with the tool's own reader;
- status_after_kill(run_dir): what the tool says about a run whose process was killed;
- files(run_dir): the files that hold the run, for bytes on disk.

Peers are imported lazily, so that a peer that is missing or broken only blanks its column.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Any

from wandb_reader import find_run_file, read_run


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Adapter:
    key = ""
    label = ""
    distribution = ""
    import_code = ""

    def unavailable(self) -> str | None:
        """None when the tool can run here, else the reason why not."""
        try:
            __import__(self.import_code.split()[1])
        except Exception as error:
            return f"cannot import: {type(error).__name__}: {error}"[:200]
        return None

    def start(self, run_dir: Path) -> None:
        raise NotImplementedError

    def log(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def read_back(self, run_dir: Path) -> int:
        raise NotImplementedError

    def status_after_kill(self, run_dir: Path) -> str:
        raise NotImplementedError

    def files(self, run_dir: Path) -> list[Path]:
        return [p for p in run_dir.rglob("*") if p.is_file()]


class TracerAdapter(Adapter):
    key, label, distribution = "tracer", "Tracer", "tracer-core"
    import_code = "import tracer"

    def start(self, run_dir: Path) -> None:
        import tracer

        self.tracer = tracer
        tracer.init(project="peers", run_name="run", storage_path=str(run_dir))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.tracer.log(values)
        self.tracer.step()

    def finish(self) -> None:
        self.tracer.finish()

    def read_back(self, run_dir: Path) -> int:
        from tracer.analysis import QueryEngine

        with QueryEngine(str(run_dir)) as engine:
            run_id = engine.list_runs()[0]["run_id"]
            return len(set(engine.get_metric_history(run_id, "loss")["steps"]))

    def status_after_kill(self, run_dir: Path) -> str:
        from tracer.analysis import QueryEngine

        with QueryEngine(str(run_dir)) as engine:
            return str(engine.list_runs()[0]["status"])


class TensorBoardAdapter(Adapter):
    key, label, distribution = "tensorboard", "TensorBoard", "tensorboard"
    import_code = "from torch.utils.tensorboard import SummaryWriter"

    def unavailable(self) -> str | None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except Exception as error:
            return f"cannot import: {type(error).__name__}: {error}"[:200]
        return None

    def start(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def finish(self) -> None:
        self.writer.close()

    def read_back(self, run_dir: Path) -> int:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "loss" not in accumulator.Tags().get("scalars", []):
            return 0
        return len({event.step for event in accumulator.Scalars("loss")})

    def status_after_kill(self, run_dir: Path) -> str:
        return "n/a (no run status)"


class WandbAdapter(Adapter):
    key, label, distribution = "wandb", "wandb (offline)", "wandb"
    import_code = "import wandb"

    def start(self, run_dir: Path) -> None:
        import wandb

        os.environ["WANDB_MODE"] = "offline"
        self.run: Any = wandb.init(project="peers", dir=str(run_dir), mode="offline")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()

    def read_back(self, run_dir: Path) -> int:
        path = find_run_file(run_dir)
        return 0 if path is None else int(read_run(path)["steps"])

    def status_after_kill(self, run_dir: Path) -> str:
        path = find_run_file(run_dir)
        if path is None:
            return "no run file"
        exit_code = read_run(path)["exit_code"]
        if exit_code is None:
            return "no exit record (offline: no status)"
        return f"exit record, code {exit_code}"


class MlflowAdapter(Adapter):
    key, label, distribution = "mlflow", "MLflow (SQLite)", "mlflow"
    import_code = "import mlflow"
    TEMPLATE_ENV = "PEERS_MLFLOW_TEMPLATE"

    @classmethod
    def prepare_template(cls, directory: Path) -> Path:
        """An empty, migrated MLflow database, copied into each run directory.

        Creating MLflow's SQLite schema (its Alembic migrations) takes ~10 s; that is a
        one-time cost per database, not a per-run one, so it is paid once here.
        """
        from mlflow import MlflowClient

        path = directory / "mlflow-template.db"
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
        os.environ[cls.TEMPLATE_ENV] = str(path)
        return path

    @staticmethod
    def uri(run_dir: Path) -> str:
        return f"sqlite:///{run_dir / 'mlflow.db'}"

    def start(self, run_dir: Path) -> None:
        import mlflow

        template = os.environ.get(self.TEMPLATE_ENV)
        if template and Path(template).exists():
            shutil.copyfile(template, run_dir / "mlflow.db")
        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.uri(run_dir))
        mlflow.set_experiment("peers")
        mlflow.start_run(run_name="run")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def finish(self) -> None:
        self.mlflow.end_run()

    def _run(self, run_dir: Path) -> tuple[Any, Any]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri(run_dir))
        experiment = client.get_experiment_by_name("peers")
        runs = client.search_runs([experiment.experiment_id])
        return client, runs[0]

    def read_back(self, run_dir: Path) -> int:
        client, run = self._run(run_dir)
        return len({m.step for m in client.get_metric_history(run.info.run_id, "loss")})

    def status_after_kill(self, run_dir: Path) -> str:
        return str(self._run(run_dir)[1].info.status)


class TrackioAdapter(Adapter):
    key, label, distribution = "trackio", "trackio", "trackio"
    import_code = "import trackio"

    @staticmethod
    def project(run_dir: Path) -> str:
        return "peers-" + run_dir.name.replace("_", "-").strip("-")

    def start(self, run_dir: Path) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=self.project(run_dir), name="run")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log(values, step=step)

    def finish(self) -> None:
        self.trackio.finish()

    def read_back(self, run_dir: Path) -> int:
        from trackio.sqlite_storage import SQLiteStorage

        logs = SQLiteStorage.get_logs(self.project(run_dir), "run")
        return len({row["step"] for row in logs if "loss" in row})

    def status_after_kill(self, run_dir: Path) -> str:
        return "n/a (no run status)"

    def files(self, run_dir: Path) -> list[Path]:
        from trackio.sqlite_storage import SQLiteStorage

        db = SQLiteStorage.get_project_db_path(self.project(run_dir))
        return [p for p in db.parent.glob(db.name + "*") if p.is_file()]


ADAPTERS: dict[str, type[Adapter]] = {
    cls.key: cls
    for cls in (TracerAdapter, TensorBoardAdapter, WandbAdapter, MlflowAdapter, TrackioAdapter)
}
