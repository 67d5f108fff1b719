"""Batch samples: what the forward hook keeps, how it is stored at checkpoints, and cleanup."""

from __future__ import annotations

from typing import Any, Optional

import pytest

import tracer
from tests.core.helpers import open_store
from tracer.capture.samples import MAX_ELEMENTS_PER_ROW
from tracer.records import SampleRecord

torch = pytest.importorskip("torch")
nn = torch.nn


def samples_of(run_id: str, step: Optional[int] = None) -> list[SampleRecord]:
    with open_store() as store:
        return store.get_samples(run_id, step=step)


def by_name(samples: list[SampleRecord], reason: str) -> dict[str, SampleRecord]:
    """The samples of one checkpoint (a step can have an interval and a finish checkpoint)
    keyed by name; names are unique within one checkpoint."""
    chosen = [sample for sample in samples if sample["reason"] == reason]
    named = {sample["name"]: sample for sample in chosen}
    assert len(named) == len(chosen), [s["name"] for s in chosen]
    return named


def assert_rows_close(stored: list[list[Any]], expected: Any) -> None:
    """`stored` (nested lists, one list per row) equals the 2-D tensor `expected`."""
    actual = torch.tensor(stored, dtype=torch.float64)
    torch.testing.assert_close(actual, expected.detach().to(torch.float64), rtol=1e-5, atol=1e-6)


def hook_count(model: Any) -> int:
    """Forward hooks on the module itself (with-kwargs hooks are listed there too)."""
    return len(model._forward_hooks)


def test_samples_are_the_first_rows_of_the_last_forward_of_a_checkpoint_step() -> None:
    """Contract: at an interval checkpoint (and at finish) the inputs and outputs of the last
    forward pass before `tracer.step()` are stored: the first `capture_samples` rows, the full
    shape, the dtype, role and reason; the copy is taken at forward time, so later in-place
    changes to the batch do not alter it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tracer.init(
        project="p", checkpoint_interval=5, capture_samples=2, track_system_metrics=False
    )
    tracer.watch(model, optimizer)
    last_inputs: dict[int, Any] = {}
    last_outputs: dict[int, Any] = {}
    total = 12
    for step in range(total):
        optimizer.zero_grad()
        for _micro in range(2):  # gradient accumulation: the second forward is the last one
            batch = torch.randn(8, 4)
            target = torch.randn(8, 3)
            output = model(batch)
            nn.functional.mse_loss(output, target).backward()
            last_inputs[step] = batch.clone()
            last_outputs[step] = output.detach().clone()
        optimizer.step()
        batch.zero_()  # an in-place change after the forward must not reach the sample
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()

    stored = samples_of(run.run_id)
    assert sorted({(s["step"], s["reason"]) for s in stored}) == [
        (5, "interval"),
        (10, "interval"),
        (11, "finish"),
    ]
    for step, reason in ((5, "interval"), (10, "interval"), (11, "finish")):
        named = by_name(samples_of(run.run_id, step=step), reason)
        assert set(named) == {"arg0", "output"}
        sample_in, sample_out = named["arg0"], named["output"]
        assert (sample_in["role"], sample_out["role"]) == ("input", "output")
        assert sample_in["reason"] == sample_out["reason"] == reason
        assert sample_in["shape"] == [8, 4] and sample_out["shape"] == [8, 3]
        assert sample_in["dtype"] == sample_out["dtype"] == "float32"
        assert not sample_in["truncated"] and not sample_out["truncated"]
        assert_rows_close(sample_in["values"], last_inputs[step][:2])
        assert_rows_close(sample_out["values"], last_outputs[step][:2])


def test_capture_samples_zero_attaches_no_hook_and_stores_nothing() -> None:
    """Contract: `capture_samples=0` adds no forward hook to a watched model and stores no
    sample, even at checkpoints."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tracer.init(
        project="p", checkpoint_interval=2, capture_samples=0, track_system_metrics=False
    )
    tracer.watch(model, optimizer)
    assert hook_count(model) == 0
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        tracer.log({"loss": 1.0})
        tracer.step()
    tracer.finish()

    assert samples_of(run.run_id) == []
    with open_store() as store:
        assert len(store.get_checkpoints(run.run_id)) == 3  # steps 2, 4 and the finish


class DictModel(nn.Module):
    """A Hugging Face style model: keyword inputs, a dict of outputs with a 0-d loss."""

    def __init__(self, vocab: int = 7, width: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids: Any, labels: Any = None) -> dict[str, Any]:
        logits = self.head(self.embed(input_ids))
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


@pytest.mark.parametrize("call", ["keywords", "positional"])
def test_keyword_inputs_and_dict_outputs_are_named(call: str) -> None:
    """Contract: positional inputs are named `arg<i>`, keyword inputs by their keyword, and
    tensors inside a dict output `output.<key>`; a 0-d tensor (the loss) is stored as a 1x1
    row with its true shape []; integer tensors keep their dtype and integer values."""
    torch.manual_seed(0)
    model = DictModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tracer.init(
        project="p", checkpoint_interval=1, capture_samples=2, track_system_metrics=False
    )
    tracer.watch(model, optimizer)
    input_ids = torch.randint(0, 7, (8, 6))
    labels = torch.randint(0, 7, (8, 6))
    optimizer.zero_grad()
    if call == "keywords":
        out = model(input_ids=input_ids, labels=labels)
    else:
        out = model(input_ids, labels)
    out["loss"].backward()
    optimizer.step()
    tracer.step()  # step 0: no checkpoint
    tracer.step()  # step 1: interval checkpoint, the forward above is still the last one
    tracer.finish()

    named = by_name(samples_of(run.run_id, step=1), "interval")
    input_names = ("input_ids", "labels") if call == "keywords" else ("arg0", "arg1")
    assert set(named) == {*input_names, "output.logits", "output.loss"}
    for name, tensor in zip(input_names, (input_ids, labels), strict=True):
        sample = named[name]
        assert sample["role"] == "input"
        assert sample["shape"] == [8, 6] and sample["dtype"] == "int64"
        assert sample["values"] == tensor[:2].tolist()
        assert all(type(v) is int for v in sample["values"][0])
    logits = named["output.logits"]
    assert logits["role"] == "output"
    assert logits["shape"] == [8, 6, 7]
    assert_rows_close(logits["values"], out["logits"][:2].reshape(2, -1))
    loss = named["output.loss"]
    assert loss["role"] == "output" and loss["shape"] == [] and not loss["truncated"]
    assert len(loss["values"]) == 1 and len(loss["values"][0]) == 1
    assert loss["values"][0][0] == pytest.approx(out["loss"].item(), rel=1e-6)


def test_long_rows_are_truncated_and_keep_the_full_shape() -> None:
    """Contract: at most MAX_ELEMENTS_PER_ROW (1024) elements are kept per row; such a sample
    is flagged `truncated` and its `shape` is still the full shape."""
    assert MAX_ELEMENTS_PER_ROW == 1024
    model = nn.Linear(3000, 2)
    run = tracer.init(
        project="p", checkpoint_interval=1, capture_samples=2, track_system_metrics=False
    )
    tracer.watch(model)
    batch = torch.randn(4, 3000)
    with torch.no_grad():
        output = model(batch)
    tracer.step()
    tracer.step()
    tracer.finish()

    named = by_name(samples_of(run.run_id, step=1), "interval")
    wide = named["arg0"]
    assert wide["shape"] == [4, 3000] and wide["truncated"] is True
    assert [len(row) for row in wide["values"]] == [1024, 1024]
    assert_rows_close(wide["values"], batch[:2, :1024])
    narrow = named["output"]
    assert narrow["shape"] == [4, 2] and narrow["truncated"] is False
    assert_rows_close(narrow["values"], output[:2])


def test_hooks_are_removed_at_finish() -> None:
    """Contract: the sample hook lives only as long as the run: `finish()` removes it, and a
    forward after finish is neither captured nor an error."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tracer.init(
        project="p", checkpoint_interval=1, capture_samples=3, track_system_metrics=False
    )
    tracer.watch(model, optimizer)
    assert hook_count(model) == 1
    model(torch.randn(8, 4))
    tracer.step()
    tracer.step()
    tracer.finish()
    assert model._forward_hooks == {}
    assert not getattr(model, "_forward_hooks_with_kwargs", {})
    model(torch.randn(8, 4))  # no hook left to fire
    assert {(s["step"], s["reason"]) for s in samples_of(run.run_id)} == {
        (1, "interval"),
        (1, "finish"),
    }


def test_an_empty_batch_never_breaks_the_forward_pass() -> None:
    """Contract (collector.py docstring): training never sees a collector's exception. An
    empty batch (0 rows, as a filtered last batch can be) must run through a watched model."""
    model = nn.Linear(4, 2)
    tracer.init(project="p", checkpoint_interval=1, capture_samples=2, track_system_metrics=False)
    tracer.watch(model)
    output = model(torch.zeros(0, 4))
    assert output.shape == (0, 2)
    tracer.step()
    tracer.step()
    tracer.finish()
