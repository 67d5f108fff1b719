"""What to try, per anomaly type: the one line a report gives after what it saw.

Detectors that know more (the step of a bad batch, the layer) write their own hint; these are
the fallbacks, also for third-party detectors that leave `hint` out.
"""

from __future__ import annotations

DEFAULT_HINTS = {
    "nan_or_inf": "look at the batch and the layer named here; lower the lr, add gradient"
    " clipping, or use bf16/loss scaling if fp16 overflowed",
    "gradient_explosion": "lower the learning rate or clip gradients (clip_grad_norm_); check"
    " the batch of that step",
    "vanishing_gradient": "use a non-saturating activation (ReLU/GELU), residual connections"
    " or normalisation, or an init scaled for the depth (Kaiming/Xavier)",
    "dead_layer": "this parameter never gets a gradient: check that its output reaches the loss"
    " (detached, multiplied by zero, or dead ReLUs)",
    "loss_spike": "check the batch of that step for corrupt inputs or labels; if spikes repeat,"
    " lower the lr or clip gradients",
    "loss_drop": "a sudden improvement: check for a data leak or a changed evaluation set",
    "loss_divergence": "the loss is climbing: lower the learning rate (or its warmup peak) and"
    " clip gradients; restart from the last healthy checkpoint",
    "loss_plateau": "the loss stopped improving: check that the lr is not 0 and that the"
    " parameters are in the optimizer and not frozen",
    "memory_leak": "something keeps references every step: tensors appended to a list"
    " (log loss.item(), not loss), or caches that grow",
    "memory_spike": "memory jumped: check the batch size or sequence length of that step",
    "parameters_not_updated": "check the param group's lr and that the scheduler is stepped"
    " once per epoch or step as it was written for",
    "parameters_outside_optimizer": "build the optimizer from this model's parameters, all"
    " that should train",
    "frozen_model": "check the requires_grad filter: it froze the layers that should train",
    "skipped_steps": "gradients overflow at every step: use bf16, lower the lr or the loss scale",
    "gradients_not_reset": "call optimizer.zero_grad() after each optimizer step",
    "eval_mode_training": "call model.train() after each evaluation",
    "evaluation_in_train_mode": "call model.eval() before evaluating",
    "repeated_batch": "create the DataLoader iterator once per epoch",
    "training_warning": "read the warning: it names a silent bug",
    "rank_divergence": "one rank differs from the others: check its data shard and its device",
    "replica_divergence": "call the DDP-wrapped model (ddp_model(x), not ddp_model.module(x));"
    " every rank must load the same checkpoint",
}


def default_hint(anomaly_type: str) -> str:
    return DEFAULT_HINTS.get(anomaly_type, "")
