"""Accelerate's `examples/complete_nlp_example.py` (tracking + checkpointing) in miniature, with
the two lines the README adds for Tracer; run by tests/accelerate/test_resume.py.

The order of events is the example's: `Accelerator(log_with=...)`, `init_trackers` (before
the model exists), `prepare`, then (Tracer's line) `watch`, `load_state` when resuming (with
`skip_first_batches` inside the resumed epoch), the loop with `save_state` every
`--checkpointing_steps` batches or each epoch, `accelerator.log(..., step=epoch)` after each
epoch's evaluation, `end_training`. Only the data and the model are stand-ins (the hub is
unreachable here): a tiny regression model, 32 training rows, an evaluation "metric" of MSE.

`--fail_at_step N` raises before the N-th optimizer step: a job that dies mid-training.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

import tracer_accelerate
from tests.accelerate.helpers import FEATURES, PROJECT, make_model
from tracer_accelerate import AccelerateTracker

TRAIN_ROWS, EVAL_ROWS = 32, 16


def get_dataloaders(batch_size: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(TRAIN_ROWS + EVAL_ROWS, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    train = TensorDataset(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
    evaluation = TensorDataset(x[TRAIN_ROWS:], y[TRAIN_ROWS:])
    return (
        DataLoader(train, shuffle=True, batch_size=batch_size),
        DataLoader(evaluation, shuffle=False, batch_size=batch_size),
    )


def training_function(config: dict[str, float], args: argparse.Namespace) -> None:
    # Initialize accelerator (the example passes log_with="all"; "all" holds the built-in
    # trackers only, so a custom tracker goes in as an instance, as the example's comment says)
    if args.with_tracking:
        accelerator = Accelerator(
            cpu=True, log_with=[AccelerateTracker(PROJECT)], project_dir=args.project_dir
        )
    else:
        accelerator = Accelerator(cpu=True)
    if args.checkpointing_steps is None:
        checkpointing_steps: int | str | None = None
    elif args.checkpointing_steps == "epoch":
        checkpointing_steps = args.checkpointing_steps
    else:
        checkpointing_steps = int(args.checkpointing_steps)
    lr = config["lr"]
    num_epochs = int(config["num_epochs"])
    seed = int(config["seed"])
    batch_size = int(config["batch_size"])

    # We need to initialize the trackers we use, and also store our configuration
    if args.with_tracking:
        accelerator.init_trackers(PROJECT, config)

    train_dataloader, eval_dataloader = get_dataloaders(batch_size)
    set_seed(seed)
    model = make_model().to(accelerator.device)
    optimizer = torch.optim.AdamW(params=model.parameters(), lr=lr)
    lr_scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.5, total_iters=20)
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    tracer_accelerate.watch(accelerator, model, optimizer)  # Tracer: after prepare

    overall_step = 0
    starting_epoch = 0
    resume_step: int | None = None
    if args.resume_from_checkpoint:
        accelerator.print(f"Resumed from checkpoint: {args.resume_from_checkpoint}")
        accelerator.load_state(args.resume_from_checkpoint)
        path = os.path.basename(args.resume_from_checkpoint)
        training_difference = os.path.splitext(path)[0]
        if "epoch" in training_difference:
            starting_epoch = int(training_difference.replace("epoch_", "")) + 1
            resume_step = None
        else:
            resume_step = int(training_difference.replace("step_", ""))
            starting_epoch = resume_step // len(train_dataloader)
            resume_step -= starting_epoch * len(train_dataloader)
        # (the example adds only the offset inside the epoch below; counting the epochs
        # done too keeps the names of later checkpoints right. Tracer does not use it.)
        overall_step = starting_epoch * len(train_dataloader)

    for epoch in range(starting_epoch, num_epochs):
        model.train()
        total_loss = torch.zeros(())
        if args.resume_from_checkpoint and epoch == starting_epoch and resume_step is not None:
            active_dataloader = accelerator.skip_first_batches(train_dataloader, resume_step)
            overall_step += resume_step
        else:
            active_dataloader = train_dataloader
        for batch in active_dataloader:
            if overall_step + 1 == args.fail_at_step:
                raise RuntimeError(f"killed before step {args.fail_at_step}")
            inputs, targets = batch
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            total_loss += loss.detach().float()
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            overall_step += 1
            if isinstance(checkpointing_steps, int) and overall_step % checkpointing_steps == 0:
                accelerator.save_state(os.path.join(args.output_dir, f"step_{overall_step}"))

        model.eval()
        squared, count = 0.0, 0
        for inputs, targets in eval_dataloader:
            with torch.no_grad():
                predictions = model(inputs)
            predictions, references = accelerator.gather_for_metrics((predictions, targets))
            squared += float(((predictions - references) ** 2).sum())
            count += references.numel()
        if args.with_tracking:
            accelerator.log(
                {
                    "eval_mse": squared / count,
                    "train_loss": total_loss.item() / len(train_dataloader),
                    "epoch": epoch,
                },
                step=epoch,
            )
        if checkpointing_steps == "epoch":
            accelerator.save_state(os.path.join(args.output_dir, f"epoch_{epoch}"))

    accelerator.end_training()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpointing_steps", type=str, default=None)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None)
    parser.add_argument("--with_tracking", action="store_true")
    parser.add_argument("--output_dir", type=str, default=".")
    parser.add_argument("--project_dir", type=str, default="logs")
    parser.add_argument("--num_epochs", type=int, default=3)
    parser.add_argument("--fail_at_step", type=int, default=-1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = {"lr": 2e-2, "num_epochs": args.num_epochs, "seed": 42, "batch_size": 8}
    training_function(config, args)


if __name__ == "__main__":
    main()
