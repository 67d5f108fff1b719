"""The main job: a small real training traced end to end, then what Tracer recorded.

    python examples/train_and_inspect.py [--steps 600] [--storage ./.tracer]

Trains a small MLP classifier on synthetic data with AdamW and a cosine schedule, logging
the training loss (as a tensor: Tracer reads it off the training thread), accuracy, learning
rate and a periodic evaluation loss. Then it reads the run back through the storage API and
prints its summary and anything non-finite it recorded.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import tracer
from tracer.config import TracerConfig
from tracer.storage import StorageBackend


def make_data(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: easy to learn a little, hard to learn fully."""
    labels = torch.randint(0, 2, (samples,), generator=generator)
    radius = torch.rand(samples, generator=generator) * 3 + 0.3
    angle = radius * 2.5 + labels * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return points + 0.08 * torch.randn(samples, 2, generator=generator), labels


def train(steps: int, storage: str) -> str:
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = make_data(4096, generator)
    eval_x, eval_y = make_data(1024, generator)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 2)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    run = tracer.init(
        project="quickstart",
        storage_path=storage,
        checkpoint_interval=200,
        tags=["example", "mlp"],
        config={"steps": steps, "lr": 3e-3, "batch_size": 64},
    )
    try:
        for _ in range(steps):
            batch = torch.randint(0, len(train_x), (64,), generator=generator)
            logits = model(train_x[batch])
            loss = nn.functional.cross_entropy(logits, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            accuracy = (logits.argmax(1) == train_y[batch]).float().mean()
            tracer.log(
                {"train/loss": loss, "train/accuracy": accuracy, "lr": schedule.get_last_lr()[0]}
            )
            if run.current_step % 100 == 0:
                with torch.no_grad():
                    eval_loss = nn.functional.cross_entropy(model(eval_x), eval_y)
                tracer.log({"eval/loss": eval_loss})
            tracer.step()
    finally:
        tracer.finish()
    return run.run_id


def show(run_id: str, storage_path: str) -> None:
    storage = StorageBackend(TracerConfig(project_name="quickstart", storage_path=storage_path))
    try:
        run = storage.get_run(run_id)
        assert run is not None
        duration = (run["end_time"] or time.time()) - run["start_time"]
        print(f"\nRun {run['run_name']} ({run_id}) in project {run['project_name']!r}")
        print(
            f"  status {run['status']}, {run['total_steps']} steps in {duration:.1f} s,"
            f" tags {run['tags']}, stored in {storage_path}/tracer.db"
        )
        print(f"\n  {'metric':<16}{'points':>8}{'final':>12}{'min':>12}{'max':>12}")
        for metric in storage.list_metrics(run_id):
            if metric["name"].startswith("_"):
                continue
            print(
                f"  {metric['name']:<16}{metric['count']:>8}{metric['last_value']:>12.4g}"
                f"{metric['min_value']:>12.4g}{metric['max_value']:>12.4g}"
            )
        checkpoints = storage.get_checkpoints(run_id)
        print(f"\n  checkpoints at steps {[c['step'] for c in checkpoints]}")
        print("\nNon-finite values recorded:")
        found = False
        for metric in storage.list_metrics(run_id):
            history = storage.get_metric_timeseries(run_id, metric["name"])
            pairs = zip(history["steps"], history["values"], strict=True)
            bad = [step for step, value in pairs if not math.isfinite(value)]
            if bad:
                found = True
                print(f"  {metric['name']}: {len(bad)} values, first at step {bad[0]}")
        if not found:
            print("  none")
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--storage", default="./.tracer")
    args = parser.parse_args()
    run_id = train(args.steps, args.storage)
    show(run_id, args.storage)


if __name__ == "__main__":
    main()
