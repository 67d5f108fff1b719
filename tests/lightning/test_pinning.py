"""Keeping the last healthy checkpoint under a real Lightning `Trainer` whose
`ModelCheckpoint(every_n_train_steps=2, save_top_k=1)` keeps only its newest file: the loss
turns NaN at step 7 (and the weights after it). The save of step 6 must survive, pinned under
`<storage>/pinned/<run>/`, with finite weights, and be named by `last_healthy_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.lightning.helpers import (
    NAMESPACES,
    PROJECT,
    make_trainer,
    namespace,
    only_run,
    tiny_module,
    tracer_callback,
)
from tracer.actions.pins import list_pins
from tracer.analysis import QueryEngine

NAN_STEP = 7


def finite(checkpoint: Path) -> bool:
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    return all(bool(torch.isfinite(tensor).all()) for tensor in state.values())


@pytest.mark.parametrize("ns", NAMESPACES)
def test_save_top_k_deletes_the_healthy_checkpoint_but_the_pin_keeps_it(
    ns: str, tmp_path: Path
) -> None:
    saves = tmp_path / "ckpts"
    checkpoint = namespace(ns).callbacks.ModelCheckpoint(
        dirpath=str(saves), every_n_train_steps=2, save_top_k=1
    )
    callback = tracer_callback(pin_checkpoints=True, flush_interval=0.05)
    trainer = make_trainer(
        ns, [callback, checkpoint], enable_checkpointing=True, max_steps=16, limit_val_batches=0
    )
    trainer.fit(tiny_module(ns, nan_at=NAN_STEP))

    kept = sorted(p.name for p in saves.iterdir())
    assert kept == ["epoch=0-step=16.ckpt"]
    assert not finite(saves / kept[0])
    with QueryEngine() as query:
        run_id = only_run(query.list_runs(), PROJECT)["run_id"]
        healthy = query.last_healthy_checkpoint(run_id)
    pins = list_pins(str(tmp_path / ".tracer"), run_id)
    assert [p.name for p in pins] == ["epoch=0-step=6.ckpt"]
    assert healthy is not None and healthy["step"] == 6
    assert healthy["path"] == str(saves / "epoch=0-step=6.ckpt")
    assert healthy["pinned_path"] == pins[0].path
    assert finite(Path(pins[0].path))
