"""A watched model's gradient summaries once they reach the host (writer thread): the series
`grad/global_norm`, `grad/max_abs` and `grad/nonfinite_layers`, the event
"nonfinite_gradients", and the per-layer norms that checkpoints and anomalies carry (the last
capture's, the largest since the previous checkpoint, the recent steps').
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from tracer.capture.gradients import kernels
from tracer.records import Collected

if TYPE_CHECKING:
    from tracer.capture.transfer import HostCopy
    from tracer.records import EventWrite


class NormReadback:
    """The host side of one `ModelWatch`: `names` are its layers, `prefix` its series'."""

    def __init__(self, names: list[str], prefix: str) -> None:
        self.names = names
        self.prefix = prefix
        self._max_since_checkpoint: Optional[list[float]] = None
        self._last_norms: Optional[list[float]] = None
        # per-layer norms of the steps of the last two drains: an anomaly checkpoint may be
        # taken after a later drain was read back (the writer and the training thread race)
        self._recent_norms: dict[int, list[float]] = {}
        self._older_norms: dict[int, list[float]] = {}

    def rows(self, copy: HostCopy, steps: list[int]) -> Collected:
        """The drained ring rows as series points, and an event per step with non-finite
        layers; keeps what the checkpoints and anomalies read next."""
        table = copy.get()
        layer_norms = table[:, kernels.SUMMARY_HEAD :]
        finite = layer_norms.isfinite()
        # NaN sorts as the largest value: an explosion to NaN/Inf shows as the peak.
        running = layer_norms.nan_to_num(nan=math.inf).amax(dim=0).tolist()
        self._last_norms = layer_norms[-1].tolist()
        if self._max_since_checkpoint is None:
            self._max_since_checkpoint = running
        else:
            self._max_since_checkpoint = [
                max(a, b) for a, b in zip(self._max_since_checkpoint, running, strict=True)
            ]
        self._older_norms = self._recent_norms
        self._recent_norms = dict(zip(steps, layer_norms.tolist(), strict=True))
        bad_counts = (~finite).sum(dim=1).tolist()
        heads = table[:, : kernels.SUMMARY_HEAD].tolist()
        prefix = self.prefix
        rows: list[tuple[int, dict[str, float]]] = []
        events: list[EventWrite] = []
        for index, (step, (global_norm, max_abs), bad) in enumerate(
            zip(steps, heads, bad_counts, strict=True)
        ):
            rows.append(
                (
                    step,
                    {
                        prefix + "grad/global_norm": global_norm,
                        prefix + "grad/max_abs": max_abs,
                        prefix + "grad/nonfinite_layers": float(bad),
                    },
                )
            )
            if bad:
                layers = [self.names[i] for i in (~finite[index]).nonzero().flatten().tolist()]
                events.append(
                    {
                        "step": step,
                        "kind": "nonfinite_gradients",
                        "data": {"layers": layers, "first_layer": layers[0]},
                    }
                )
        return Collected(rows, events)

    def anomaly_stats(self, step: int) -> dict[str, dict[str, float]]:
        """Per-layer norms at `step`, if it is among the last drained steps."""
        norms = self._recent_norms.get(step) or self._older_norms.get(step)
        if norms is None:
            return {}
        peaks = self._max_since_checkpoint or [kernels.MISSING] * len(self.names)
        return {
            name: {"norm": _present(norm), "max_norm_since_checkpoint": _present(peak)}
            for name, norm, peak in zip(self.names, norms, peaks, strict=True)
        }

    def stats(self, copy: Optional[HostCopy]) -> dict[str, dict[str, float]]:
        peaks = self._max_since_checkpoint or [kernels.MISSING] * len(self.names)
        self._max_since_checkpoint = None
        if copy is not None:
            rows = [
                dict(zip(kernels.FULL_STAT_NAMES, values, strict=True))
                for values in copy.get().tolist()
            ]
        elif self._last_norms is not None:
            rows = [{"norm": _present(norm)} for norm in self._last_norms]
        else:
            return {}
        stats = {}
        for name, entry, peak in zip(self.names, rows, peaks, strict=True):
            entry["max_norm_since_checkpoint"] = _present(peak)
            stats[name] = entry
        return stats


def _present(norm: float) -> float:
    return math.nan if norm == kernels.MISSING else norm
