"""The main job: a small real training traced end to end, then what Tracer found.

    python examples/train_and_inspect.py [--steps 600] [--storage ./.tracer] [--clean]

Trains a small MLP classifier on synthetic data with AdamW and a cosine schedule, with
`tracer.watch` on the model and optimizer, logging the training loss (as a tensor: Tracer
reads it off the training thread), accuracy, learning rate and a periodic evaluation loss.
Unless `--clean` is given, three corrupted batches (inputs scaled x40) are fed at 70% of the
run, the kind of fault Tracer exists to find. Then it prints the run's summary and the
anomalies found online, and checks that offline detection over the stored run agrees.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

import tracer
from tracer.analysis import AnomalyDetector, QueryEngine
from tracer.report import write_report


def make_data(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: easy to learn a little, hard to learn fully."""
    labels = torch.randint(0, 2, (samples,), generator=generator)
    radius = torch.rand(samples, generator=generator) * 3 + 0.3
    angle = radius * 2.5 + labels * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return points + 0.08 * torch.randn(samples, 2, generator=generator), labels


def train(steps: int, storage: str, clean: bool) -> str:
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = make_data(4096, generator)
    eval_x, eval_y = make_data(1024, generator)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 2)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    corrupted = set() if clean else {int(steps * 0.7) + i for i in range(3)}
    run = tracer.init(
        project="quickstart",
        storage_path=storage,
        checkpoint_interval=100,
        tags=["example", "mlp"],
        config={"steps": steps, "lr": 3e-3, "batch_size": 64, "corrupted": sorted(corrupted)},
    )
    tracer.watch(model, optimizer=optimizer)
    try:
        for step in range(steps):
            batch = torch.randint(0, len(train_x), (64,), generator=generator)
            inputs = train_x[batch] * (40.0 if step in corrupted else 1.0)
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            accuracy = (logits.argmax(1) == train_y[batch]).float().mean()
            tracer.log(
                {"train/loss": loss, "train/accuracy": accuracy, "lr": schedule.get_last_lr()[0]}
            )
            if step % 100 == 0:
                with torch.no_grad():
                    eval_loss = nn.functional.cross_entropy(model(eval_x), eval_y)
                tracer.log({"eval/loss": eval_loss})
            tracer.step()
    finally:
        tracer.finish()
    return run.run_id


def tracer_command() -> str:
    """How to type this interpreter's `tracer` command here: `tracer` when that is the one
    on PATH, else the script's path (`.tox/demo/bin/tracer` under tox), else `python -m`.
    tox puts its env on PATH only while it runs: the shell the user types into has not."""
    found = shutil.which("tracer", path=str(Path(sys.executable).parent))
    if found is None:
        return f"{sys.executable} -m tracer"
    script, on_path = Path(found), shutil.which("tracer")
    under_tox = "TOX_ENV_NAME" in os.environ
    if not under_tox and on_path is not None and Path(on_path).resolve() == script.resolve():
        return "tracer"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def show(run_id: str, storage_path: str) -> None:
    with QueryEngine(storage_path) as query:
        summary = query.get_run_summary(run_id)
        print(f"\nRun {summary['run_name']} ({run_id}) in project {summary['project_name']!r}")
        print(
            f"  status {summary['status']}, {summary['total_steps']} steps in"
            f" {summary['duration']:.1f} s, {summary['checkpoints']} checkpoints,"
            f" stored in {storage_path}/tracer.db"
        )
        print(f"\n  {'metric':<24}{'final':>12}{'best':>12}")
        for name, final in summary["final_metrics"].items():
            best = summary["best_metrics"].get(name)  # none for an lr or a norm
            shown = "-" if best is None else f"{best:.4g}"
            print(f"  {name:<24}{final:>12.4g}{shown:>12}")
        anomalies = query.get_anomalies(run_id)
        serious = [a for a in anomalies if a["severity"] != "info"]
        print(f"\nAnomaly episodes found while training: {len(serious) or 'none'}")
        for anomaly in serious:
            kind = anomaly["anomaly_type"]
            steps = f"{anomaly['step']}-{anomaly['end_step']}"
            print(f"  steps {steps:>11}  {anomaly['severity']:<8} {kind:<18} {anomaly['message']}")
            print(f"  {'':>17}try: {anomaly['hint']}")
        if len(serious) < len(anomalies):
            where = f"{tracer_command()} anomalies {run_id} --all --storage {storage_path}"
            print(f"  (and {len(anomalies) - len(serious)} info-level: {where})")
        offline = AnomalyDetector(query.storage).detect_all_anomalies(run_id)
        same = {(a["anomaly_type"], a["step"], a["subject"]) for a in offline} == {
            (a["anomaly_type"], a["step"], a["subject"]) for a in anomalies
        }
        print(f"\nOffline detection over the stored run agrees: {'yes' if same else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--storage", default="./.tracer")
    parser.add_argument("--clean", action="store_true", help="no corrupted batches")
    parser.add_argument("--report", default="tracer-report.html", help="the HTML report to write")
    args = parser.parse_args()
    run_id = train(args.steps, args.storage, args.clean)
    show(run_id, args.storage)
    report = write_report([run_id], args.report, storage_path=args.storage)
    print(f"\nHTML report (opens offline): {report}")
    where = f"--storage {args.storage}"
    command = tracer_command()
    print(f"Explore further: {command} show {run_id} {where}")
    print(f"                 {command} plot {run_id} train/loss grad/global_norm {where}")


if __name__ == "__main__":
    main()
