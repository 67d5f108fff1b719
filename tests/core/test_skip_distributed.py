"""`on_nonfinite="skip"` under torchrun (two CPU processes, gloo): a NaN in one rank's gradients
makes every rank skip that step, since the flag is all-reduced before the decision, and the
third skip in a row stops both ranks at the same step (tests/core/skip_training.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("torch.distributed")

from tests.core.skip_training import BAD_STEPS, reference_weights  # noqa: E402
from tests.torchrun import run_torchrun  # noqa: E402
from tracer.analysis import QueryEngine  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (distributed.is_available() and distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available in this torch build",
    ),
]

SCRIPT = Path(__file__).with_name("skip_training.py")
STEPS = 20
TIMEOUT_S = 180.0


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path: Path) -> None:
    """Rank 1 alone has NaN gradients at steps 3, 6, 7, 8: both ranks leave their weights
    untouched at exactly those steps, both stop at step 8 (the third skip in a row), and
    both end with the same finite weights: those of one process that left those steps out."""
    run_torchrun(SCRIPT, [STEPS], tmp_path, timeout=TIMEOUT_S)
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["is_writer"] for r in reports] == [True, False]
    assert [r["unchanged"] for r in reports] == [list(BAD_STEPS)] * 2
    assert [r["halted_at"] for r in reports] == [BAD_STEPS[-1]] * 2
    first, second = (r["weights"] for r in reports)
    assert all(math.isfinite(w) for w in first)
    assert first == second
    assert first == pytest.approx(reference_weights(list(BAD_STEPS), BAD_STEPS[-1] + 1))

    with QueryEngine(str(tmp_path / ".tracer")) as query:
        runs = query.list_runs()
        assert len(runs) == 1, runs
        run = runs[0]
        skipped = query.get_metric_history(run["run_id"], "optimizer/skipped_step")
        events = query.storage.get_events(run["run_id"], "optimizer_step_skipped")
    assert run["run_id"] == reports[0]["run_id"]
    assert run["status"] == "failed"
    assert "max_consecutive_skips=3" in (run["error"] or "")
    assert skipped["steps"] == list(BAD_STEPS)
    assert [e["data"]["consecutive"] for e in events] == [1, 1, 2, 3]
