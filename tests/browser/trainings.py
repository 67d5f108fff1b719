"""The real trainings the browser tests draw: a small torch MLP traced end to end.

A synthetic binary task, the model watched with its optimizer, a checkpoint every 5 steps,
`train/loss`, `train/accuracy`, `lr` every step and `eval/loss` every 10. At `nan_step` one
input is NaN: Tracer records the non-finite loss and gradients (anomalies), and an optimizer
pre-hook registered after Tracer's zeroes those gradients, so training goes on healthy and
the charts have a whole curve to draw.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

import tracer


def train_mlp(
    *,
    steps: int,
    lr: float,
    seed: int,
    nan_step: Optional[int],
    samples: int = 512,
    **init: Any,
) -> str:
    """Train, traced by `tracer.init(checkpoint_interval=5, **init)`; returns the run id."""
    torch = pytest.importorskip("torch")
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add noise on a shared machine
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    inputs_all = torch.randn(samples, 8, generator=generator)
    targets_all = (inputs_all[:, :3].sum(1, keepdim=True) > 0).float()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    run = tracer.init(checkpoint_interval=5, **init)
    tracer.watch(model, optimizer)

    def drop_nonfinite(opt: Any, *_: object) -> None:
        for group in opt.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.nan_to_num_(0.0, 0.0, 0.0)

    optimizer.register_step_pre_hook(drop_nonfinite)
    try:
        for step in range(steps):
            batch = torch.randint(0, len(inputs_all), (32,), generator=generator)
            inputs, targets = inputs_all[batch].clone(), targets_all[batch]
            if step == nan_step:
                inputs[0, 0] = float("nan")
            logits = model(inputs)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            accuracy = ((logits > 0).float() == targets).float().mean()
            tracer.log({"train/loss": loss, "train/accuracy": accuracy, "lr": lr})
            if step % 10 == 9:
                with torch.no_grad():
                    eval_loss = nn.functional.binary_cross_entropy_with_logits(
                        model(inputs_all[:128]), targets_all[:128]
                    )
                tracer.log({"eval/loss": eval_loss})
            tracer.step()
    finally:
        tracer.finish()
        torch.set_num_threads(threads)
    return run.run_id
