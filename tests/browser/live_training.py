"""A training loop for the dashboard's browser tests, run as its own process while `tracer ui`
serves the same store: the test watches it live in Chromium.

    python tests/browser/live_training.py --storage DIR --gates DIR --name NAME
        [--steps 60] [--nan-step 25] [--pause-at 10,20] [--step-seconds 0.05]

A real training (a tiny torch MLP on a fixed random classification task, SGD, gradients
watched) with `tracer.init/log/step/watch/finish`: the loss and accuracy as tensors, and the
learning rate. At `--nan-step` one input of the batch is NaN, so the loss and the gradients
are NaN (Tracer records them as non-finite and raises critical anomalies); the optimizer skips
that step, as a guarded loop does, so the run goes on. At each step of `--pause-at` it waits
until the file `<gates>/go-<step>`
exists, so the test decides when the run moves on (the page is open before the NaN arrives).
After every closed step it writes `<gates>/done-<step>` holding the wall time, so the test can
measure how long the page took to show it. Exits 3 if a gate is not opened within 120 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

import tracer

GATE_TIMEOUT_S = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--gates", required=True)
    parser.add_argument("--name", default="live-run")
    parser.add_argument("--project", default="ui-live")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--nan-step", type=int, default=25)
    parser.add_argument("--pause-at", default="")
    parser.add_argument("--step-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    gates = Path(args.gates)
    gates.mkdir(parents=True, exist_ok=True)
    pauses = {int(step) for step in args.pause_at.split(",") if step}

    torch.manual_seed(0)
    inputs = torch.randn(256, 8)
    targets = (inputs[:, :2].sum(dim=1, keepdim=True) > 0).float()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tracer.init(
        project=args.project,
        run_name=args.name,
        storage_path=args.storage,
        tags=["live", "browser-test"],
        notes="Trained while the dashboard watches.",
        config={"lr": lr, "optimizer": "sgd", "nan_step": args.nan_step, "model": "mlp-8-16-1"},
        flush_interval=0.2,
        heartbeat_interval=1.0,
        checkpoint_interval=5,
        track_system_metrics=False,
    )
    tracer.watch(model, optimizer)
    try:
        for step in range(args.steps):
            if step in pauses:
                deadline = time.monotonic() + GATE_TIMEOUT_S
                while not (gates / f"go-{step}").exists():
                    if time.monotonic() > deadline:
                        tracer.finish("failed")
                        return 3
                    time.sleep(0.02)
            batch = torch.randint(0, len(inputs), (32,))
            x, y = inputs[batch].clone(), targets[batch]
            if step == args.nan_step:
                x[0, 0] = float("nan")  # a corrupt sample
            optimizer.zero_grad()
            logits = model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
            loss.backward()
            if torch.isfinite(loss):
                optimizer.step()  # a guarded loop skips the step of a non-finite loss
            accuracy = ((logits > 0).float() == y).float().mean()
            tracer.log({"train/loss": loss.detach(), "train/accuracy": accuracy, "lr": lr})
            tracer.step()
            (gates / f"done-{step}").write_text(repr(time.time()))
            time.sleep(args.step_seconds)
    finally:
        tracer.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
