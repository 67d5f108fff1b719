"""A training loop for the dashboard's browser tests, run as its own process while `tracer ui`
serves the same store: the test watches it live in Chromium.

    python tests/browser/live_training.py --storage DIR --gates DIR --name NAME
        [--steps 60] [--nan-step 25] [--pause-at 10,20] [--step-seconds 0.05]

A plain loop (no torch) with `tracer.init/log/step/finish`: a decaying loss, an accuracy and a
learning rate; at `--nan-step` the loss is NaN (Tracer records it as non-finite and raises a
critical anomaly). At each step of `--pause-at` it waits until the file `<gates>/go-<step>`
exists, so the test decides when the run moves on (the page is open before the NaN arrives).
After every closed step it writes `<gates>/done-<step>` holding the wall time, so the test can
measure how long the page took to show it. Exits 3 if a gate is not opened within 120 s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

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

    tracer.init(
        project=args.project,
        run_name=args.name,
        storage_path=args.storage,
        tags=["live", "browser-test"],
        notes="Trained while the dashboard watches.",
        config={"lr": 0.05, "optimizer": "sgd", "nan_step": args.nan_step},
        flush_interval=0.2,
        heartbeat_interval=1.0,
        checkpoint_interval=5,
        track_system_metrics=False,
    )
    try:
        for step in range(args.steps):
            if step in pauses:
                deadline = time.monotonic() + GATE_TIMEOUT_S
                while not (gates / f"go-{step}").exists():
                    if time.monotonic() > deadline:
                        tracer.finish("failed")
                        return 3
                    time.sleep(0.02)
            loss = 2.0 / (1.0 + 0.08 * step) + 0.02 * math.sin(step)
            tracer.log(
                {
                    "train/loss": float("nan") if step == args.nan_step else loss,
                    "train/accuracy": 1.0 - loss / 2.5,
                    "lr": 0.05,
                }
            )
            tracer.step()
            (gates / f"done-{step}").write_text(repr(time.time()))
            time.sleep(args.step_seconds)
    finally:
        tracer.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
