"""What `QueryEngine` returns for a run's summary, a comparison and an anomaly list: the
same dict or list as before (code that indexes, compares or serialises them is unchanged),
plus `_repr_html_`, so a notebook cell that ends with one shows a small table with inline
sparklines (`analysis/notebook.py`).

The histories behind the sparklines are read when the object is displayed, not when it is
made (the CLI and the dashboard never display them, so they never pay for it), through the
engine's storage; after the engine is closed the table is shown without curves.
"""

from __future__ import annotations

from typing import Any

from tracer.analysis.notebook import Histories, anomalies_html, comparison_html, run_html


class _Displayed:
    """What the three share: the history loader is the engine's, not data. A copy, a deep
    copy or a pickle carries the data only (a loader would drag the open store along), and
    shows its table without curves."""

    _histories: Histories = None

    def __getstate__(self) -> dict[str, Any]:
        return {}


class RunSummary(_Displayed, dict[str, Any]):
    """`QueryEngine.get_run_summary`'s dict, displayed as the run's table in a notebook."""

    def __init__(self, summary: dict[str, Any], histories: Histories = None) -> None:
        super().__init__(summary)
        self._histories = histories

    def _repr_html_(self) -> str:
        return run_html(self, self._histories)


class Comparison(_Displayed, dict[str, Any]):
    """`QueryEngine.compare_runs`'s dict, displayed as a per-metric table with both curves."""

    def __init__(self, comparison: dict[str, Any], histories: Histories = None) -> None:
        super().__init__(comparison)
        self._histories = histories

    def _repr_html_(self) -> str:
        return comparison_html(self, self._histories)


class AnomalyList(_Displayed, list[dict[str, Any]]):
    """`QueryEngine.get_anomalies`'s list, displayed as one row per episode."""

    def __init__(self, anomalies: list[dict[str, Any]], histories: Histories = None) -> None:
        super().__init__(anomalies)
        self._histories = histories

    def _repr_html_(self) -> str:
        return anomalies_html(self, self._histories)
