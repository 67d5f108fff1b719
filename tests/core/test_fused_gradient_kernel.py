"""The opt-in one-read gradient kernel (`tracer.capture.gradients.fused`) against the foreach
path it replaces.

On the CPU the kernels run in Triton's interpreter, which is chosen when a kernel is jitted
from `TRITON_INTERPRET=1`: each check runs in a child interpreter with that variable set, so
nothing leaks into the rest of the suite. The fallback checks need torch only. The `gpu`
tests run the compiled kernels on CUDA and check that they never sync the host.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.core.cuda_training import cuda_model, cuda_steps
from tests.core.helpers import series
from tests.core.processes import CHILD_TIMEOUT_S, child_env

torch = pytest.importorskip("torch")

from tracer.capture.gradients import fused, kernels  # noqa: E402 (after the torch skip)

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton (its interpreter)"
)

# Shared by the child scripts: the fused and the foreach summary of the same gradients.
PRELUDE = """
import math, os, sys
assert os.environ["TRITON_INTERPRET"] == "1"
import torch
from torch.testing import assert_close
from tracer.capture.gradients import kernels
from tracer.capture.gradients.fused import FusedSummary

def both(grads, index=None, num_layers=None, fused=None, **sizes):
    fused = fused or FusedSummary(**sizes)
    assert fused.norms_and_max(grads) is not None, "the fused path did not run"
    count = len(grads) if num_layers is None else num_layers
    got = kernels.step_summary(grads, index, count, fused=fused)
    want = kernels.step_summary(grads, index, count)
    return got, want

def same(got, want):
    assert_close(got, want, rtol=1e-5, atol=0, equal_nan=True)
    assert got[1].item() == want[1].item() or (math.isnan(got[1]) and math.isnan(want[1]))

def sized(sizes, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=generator) * (1 + i)).to(dtype) for i, n in enumerate(sizes)]
"""


def interpreted(script: str, tmp_path: Path) -> str:
    """Run PRELUDE + `script` in a child with TRITON_INTERPRET=1; its stdout, or fail."""
    path = tmp_path / "check.py"
    path.write_text(PRELUDE + textwrap.dedent(script))
    env = child_env()
    env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=CHILD_TIMEOUT_S,
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_values_equal_the_foreach_path(tmp_path: Path, dtype: str) -> None:
    interpreted(
        f"""
        dtype = torch.{dtype}
        sizes = [1, 7, 4095, 4096, 4097, 65536 + 3, 140001]
        got, want = both(sized(sizes, dtype))
        same(got, want)
        reference = torch.tensor([g.double().norm().item() for g in sized(sizes, dtype)])
        assert_close(got[2:].double(), reference.double(), rtol=2e-6, atol=0)
        # many tensors, small blocks: most cross chunk edges, one launch for all of them
        # (the interpreter takes ~3 ms per program: a few hundred programs each)
        many = [1 + (i * 7919) % 300 for i in range(300)]
        same(*both(sized(many, dtype, seed=1), block=64, chunk_blocks=2))
        same(*both(sized(many[:100], dtype, seed=2), block=16, chunk_blocks=1))
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
def test_mixed_dtypes_misaligned_and_strided_gradients(tmp_path: Path) -> None:
    interpreted(
        """
        grads = sized([100, 5000, 77], torch.float32)
        grads += sized([300, 9], torch.bfloat16, seed=3) + sized([4100], torch.float16, seed=4)
        grads.append(torch.randn(1001)[1:])  # 4 bytes past an aligned address
        grads.append(torch.randn(2, 3, 5, 7).to(memory_format=torch.channels_last))  # dense
        fused = FusedSummary(block=32, chunk_blocks=3)
        same(*both(grads, fused=fused))
        groups = {(str(dtype), aligned) for dtype, aligned, _, _ in fused._tables.groups}
        assert ("torch.float32", False) in groups and len(groups) == 4, groups
        strided = torch.randn(6, 8)[:, ::2]  # not dense: that step takes the foreach path
        assert FusedSummary().norms_and_max([*grads, strided]) is None
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("where", [0, 17, 63, 64, 200, 299])
def test_nan_or_inf_makes_exactly_its_layer_and_the_max_non_finite(
    tmp_path: Path, where: int
) -> None:
    """NaN or Inf at the start, inside a full block, at block and chunk edges, in the tail."""
    interpreted(
        f"""
        for bad in (float("nan"), float("inf"), float("-inf")):
            grads = sized([50, 300, 4, 1000], torch.float32)
            grads[1][{where}] = bad
            grads[3][999] = 1e6  # the largest finite value sits elsewhere
            got, want = both(grads, block=16, chunk_blocks=4)
            same(got, want)
            finite = got[2:].isfinite().tolist()
            assert finite == [True, False, True, True], (bad, got)
            assert not got[0].isfinite() and not got[1].isfinite(), (bad, got)
            if bad != bad:
                assert got[1].isnan() and got[3].isnan(), got
            else:
                assert got[1].item() == math.inf and got[3].item() == math.inf, got
        for dtype in (torch.float16, torch.bfloat16):
            grads = sized([10, 5000], dtype)
            grads[1][4321] = float("nan")
            got, want = both(grads, block=64, chunk_blocks=2)
            same(got, want)
            assert got[2:].isfinite().tolist() == [True, False] and got[1].isnan()
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
def test_empty_tensors_add_nothing(tmp_path: Path) -> None:
    interpreted(
        """
        grads = [torch.empty(0), torch.tensor([-3.0, 2.0]), torch.empty(0, 4)]
        got, want = both(grads)
        same(got, want)
        root = math.sqrt(13.0)
        assert torch.equal(got, torch.tensor([root, 3.0, 0.0, root, 0.0])), got
        got, want = both([torch.empty(0), torch.empty(0, dtype=torch.bfloat16)])
        same(got, want)
        assert got.tolist() == [0.0, 0.0, 0.0, 0.0]  # a rank's empty shards: no max at all
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
def test_layers_without_a_gradient_read_missing(tmp_path: Path) -> None:
    interpreted(
        f"""
        grads = sized([40, 3, 9000], torch.float32)
        index = torch.tensor([0, 2, 5])
        got, want = both(grads, index, num_layers=6, block=128, chunk_blocks=2)
        same(got, want)
        assert got[2:][[1, 3, 4]].tolist() == [{kernels.MISSING}] * 3
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
def test_runs_are_bit_identical_and_moved_gradients_are_followed(tmp_path: Path) -> None:
    interpreted(
        """
        grads = sized([1, 999, 70000, 12345], torch.float32)
        first = FusedSummary()
        a = kernels.step_summary(grads, None, 4, fused=first)
        b = kernels.step_summary(grads, None, 4, fused=first)
        c = kernels.step_summary(grads, None, 4, fused=FusedSummary())
        assert torch.equal(a, b) and torch.equal(a, c)
        tables = first._tables
        moved = [g.clone() * 2 for g in grads]  # same layout, new addresses
        same(*both(moved, fused=first))
        assert first._tables is tables  # only the addresses were uploaded again
        other = sized([5, 6], torch.float16)  # a new layout: new tables
        same(*both(other, fused=first))
        assert first._tables is not tables
        """,
        tmp_path,
    )


@pytest.mark.slow
@needs_triton
def test_training_with_the_option_stores_the_same_gradient_norms(tmp_path: Path) -> None:
    out = interpreted(
        """
        import logging, tracer
        from tracer.capture.gradients import fused
        from tracer.analysis import QueryEngine

        used = []
        original = fused.FusedSummary.norms_and_max
        def spy(self, grads):
            result = original(self, grads)
            used.append(result is not None)
            return result
        fused.FusedSummary.norms_and_max = spy

        def train(option):
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
            )
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            run = tracer.init(
                project="p", storage_path="store", fused_gradient_kernel=option,
                checkpoint_interval=3,
            )
            tracer.watch(model, optimizer=optimizer)
            for step in range(6):
                inputs = torch.randn(16, 6, generator=torch.Generator().manual_seed(step))
                loss = model(inputs).pow(2).mean()
                loss.backward()
                if step == 4:
                    model[0].bias.grad[3] = float("nan")
                optimizer.step()
                optimizer.zero_grad()
                tracer.log({"loss": loss.detach()})
                tracer.step()
            tracer.finish()
            return run.run_id

        fused_run, plain_run = train(True), train(False)
        assert used == [True] * 6, used
        query = QueryEngine(storage_path="store")
        for name in ("grad/global_norm", "grad/max_abs", "grad/nonfinite_layers"):
            got = query.get_metric_history(fused_run, name)
            want = query.get_metric_history(plain_run, name)
            assert got["steps"] == want["steps"] == list(range(6)), (name, got, want)
            assert_close(torch.tensor(got["values"]), torch.tensor(want["values"]),
                         rtol=1e-6, atol=0, equal_nan=True)
        nonfinite = query.get_metric_history(fused_run, "grad/nonfinite_layers")["values"]
        assert nonfinite == [0, 0, 0, 0, 1, 4], nonfinite  # the NaN bias spreads by step 5
        print("ok")
        """,
        tmp_path,
    )
    assert out.strip().endswith("ok")


@pytest.mark.slow
def test_without_triton_the_option_falls_back_with_one_warning(tmp_path: Path) -> None:
    """triton made unimportable: the same norms as without the option, one warning."""
    interpreted(
        """
        sys.modules["triton"] = None  # import triton now raises ImportError
        import logging, tracer
        from tracer.analysis import QueryEngine

        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        logging.getLogger("tracer").addHandler(Keep(logging.WARNING))

        def train(option):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            run = tracer.init(project="p", storage_path="store", fused_gradient_kernel=option)
            tracer.watch(model, optimizer=optimizer)
            for step in range(5):
                model(torch.randn(8, 4)).pow(2).mean().backward()
                optimizer.step()
                optimizer.zero_grad()
                tracer.step()
            tracer.finish()
            return run.run_id

        fused_run, plain_run = train(True), train(False)
        query = QueryEngine(storage_path="store")
        got = query.get_metric_history(fused_run, "grad/global_norm")
        want = query.get_metric_history(plain_run, "grad/global_norm")
        assert got == want and got["steps"] == list(range(5)), (got, want)
        fused_warnings = [r for r in records if r.name == "tracer.capture.gradients.fused"]
        assert len(fused_warnings) == 1, [r.getMessage() for r in records]
        message = fused_warnings[0].getMessage()
        assert "ImportError" in message or "ModuleNotFoundError" in message, message
        """,
        tmp_path,
    )


def test_a_failing_launch_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compile or launch error: the foreach values, one warning, then foreach for good."""

    def broken() -> Any:
        raise RuntimeError("PTX assembly failed")

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors qualify; nothing is jitted
    monkeypatch.setattr(fused, "_compiled", broken)
    monkeypatch.setattr(fused, "_failure", None)
    grads = [torch.randn(10), torch.randn(3, 3)]
    summary = fused.FusedSummary()
    with caplog.at_level(logging.WARNING, logger="tracer.capture.gradients.fused"):
        rows = [kernels.step_summary(grads, None, 2, fused=summary) for _ in range(3)]
        other = fused.FusedSummary().norms_and_max(grads)
    want = kernels.step_summary(grads, None, 2)
    assert all(torch.equal(row, want) for row in rows)
    assert other is None  # off for the rest of the process, for every watch
    warnings = [r for r in caplog.records if r.name == "tracer.capture.gradients.fused"]
    assert len(warnings) == 1 and "PTX assembly failed" in warnings[0].getMessage()


def test_the_option_is_off_by_default_and_validated() -> None:
    assert tracer.TracerConfig(project_name="p").fused_gradient_kernel is False
    with pytest.raises(ValueError, match="fused_gradient_kernel"):
        tracer.TracerConfig(project_name="p", fused_gradient_kernel="sometimes")


def test_cpu_gradients_without_the_interpreter_take_the_foreach_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert fused.FusedSummary().norms_and_max([torch.randn(5)]) is None


# -- CUDA ------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or fused.interpreting(), reason="needs a CUDA GPU"
)


def _cuda_grads() -> list[Any]:
    """A GPT-like mix: big and tiny tensors, fp32/bf16/fp16, one misaligned view."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    sizes = [50257 * 768, 768, 3 * 768 * 768, 1, 4097, 65536 * 3 + 5, 1000]
    grads = [torch.randn(n, device="cuda", generator=generator) for n in sizes]
    grads += [torch.randn(300_001, device="cuda", generator=generator).to(torch.bfloat16)]
    grads += [torch.randn(70_000, device="cuda", generator=generator).to(torch.float16)]
    grads += [torch.randn(10_001, device="cuda", generator=generator)[1:]]
    return grads


@pytest.mark.gpu
@needs_triton
@cuda
def test_cuda_values_equal_the_foreach_path_and_are_deterministic() -> None:
    grads = _cuda_grads()
    summary = fused.FusedSummary()
    assert summary.norms_and_max(grads) is not None, fused._failure
    got = kernels.step_summary(grads, None, len(grads), fused=summary)
    again = kernels.step_summary(grads, None, len(grads), fused=summary)
    want = kernels.step_summary(grads, None, len(grads))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert got[1].item() == want[1].item()
    assert torch.equal(got, again)
    index = torch.tensor([0, 2, 3], device="cuda")
    torch.testing.assert_close(
        kernels.step_summary(grads[:3], index, 5, fused=summary),
        kernels.step_summary(grads[:3], index, 5),
        rtol=1e-5,
        atol=0,
    )
    grads[2][12345] = float("nan")
    grads[7][-1] = float("inf")
    got = kernels.step_summary(grads, None, len(grads), fused=summary)
    assert got[2:].isfinite().tolist() == [i not in (2, 7) for i in range(len(grads))]
    assert got[0].isnan() and got[1].isnan()
    torch.cuda.synchronize()  # an illegal address would surface here
    assert fused._failure is None


@pytest.mark.gpu
@needs_triton
@cuda
def test_cuda_fused_capture_makes_no_host_sync() -> None:
    grads = _cuda_grads()
    summary = fused.FusedSummary()
    kernels.step_summary(grads, None, len(grads), fused=summary)  # compile, upload tables
    moved = [g.clone() for g in grads]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            kernels.step_summary(grads, None, len(grads), fused=summary)
        kernels.step_summary(moved, None, len(moved), fused=summary)  # addresses re-uploaded
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert fused._failure is None

    model = cuda_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = tracer.init(project="gpu", fused_gradient_kernel=True, checkpoint_interval=10)
    tracer.watch(model, optimizer=optimizer)

    cuda_steps(model, optimizer, 2, log=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cuda_steps(model, optimizer, 70, log=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    tracer.finish()
    assert fused._failure is None
    norms = series(run.run_id, "grad/global_norm")
    assert norms["steps"] == list(range(72)) and all(v > 0 for v in norms["values"])
