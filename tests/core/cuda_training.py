"""A small bf16-autocast model trained on a CUDA GPU, for the `gpu` tests of gradient capture
(torch is imported on use: this module is imported where torch may be missing)."""

from __future__ import annotations

from typing import Any

import tracer


def cuda_model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)
    ).cuda()


def cuda_steps(model: Any, optimizer: Any, count: int, log: bool) -> None:
    """`count` optimizer steps; with `log`, the loss (a device tensor: read on the writer
    thread) is logged and the step closed."""
    import torch

    for _ in range(count):
        inputs = torch.randn(32, 256, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inputs).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if log:
            tracer.log({"loss": loss.detach()})
            tracer.step()
