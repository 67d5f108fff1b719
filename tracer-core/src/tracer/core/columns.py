"""Pivot closed steps (rows) into per-metric columns for storage, at C speed where possible.

The writer thread shares the GIL with training, so its per-point cost is training's cost
too. Steps that log the same metric names (the usual case) are pivoted a whole column at a
time with `map`/`itemgetter`; values are read with `float()` in one pass, which also reads
tensors; only a column that fails falls back to one value at a time.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Collection, Mapping, Sequence
from operator import itemgetter, lt
from typing import Any, Optional

from tracer.records import TIMESTAMP_METRIC

logger = logging.getLogger(__name__)

Points = dict[str, tuple[list[int], list[float]]]

LIST_POINT_BYTES = 64  # a point in lists: two slots, a float object, a share of step ints
PACKED_POINT_BYTES = 16  # in typed arrays: an int64 step and a float64 value


class Columns(dict[str, tuple[list[int], list[float]]]):
    """The points of one batch while they are built. The series of one group share one
    steps list (one copy, one order check for all): `shared` holds the ids of such lists, and
    a series whose steps are shared is copied once before it is first extended."""

    def __init__(self) -> None:
        super().__init__()
        self.shared: set[int] = set()


def _extend(points: Points, name: str, steps: list[int], values: list[float]) -> None:
    """Add a column (its `steps` may be shared with other series: never changed here)."""
    shared = points.shared if isinstance(points, Columns) else None
    series = points.get(name)
    if series is None:
        points[name] = (steps, values)
        if shared is not None:
            shared.add(id(steps))
    elif shared is None or id(series[0]) in shared:
        points[name] = (series[0] + steps, series[1] + values)  # now its own lists
    else:
        series[0].extend(steps)
        series[1].extend(values)


def _floats(name: str, raw: list[Any], steps: list[int]) -> tuple[list[int], list[float], int]:
    """(steps, values, unreadable) for one column; unreadable values are left out."""
    try:
        return steps, list(map(float, raw)), 0
    except Exception:
        kept_steps: list[int] = []
        kept: list[float] = []
        bad = 0
        for step, value in zip(steps, raw, strict=False):
            try:
                kept.append(float(value))
            except Exception as error:
                bad += 1
                if bad == 1:
                    logger.warning(
                        "Tracer could not read metric %r at step %d: %s", name, step, error
                    )
                continue
            kept_steps.append(step)
        return kept_steps, kept, bad


def pivot(
    steps: list[int],
    timestamps: list[float],
    dicts: list[dict[str, Any]],
    points: Points,
    latest: dict[str, float],
) -> int:
    """Append closed steps to `points` as columns (with `_timestamp`) and update `latest`.

    Returns how many values could not be read (they are left out).
    """
    if not steps:
        return 0
    steps = list(steps)  # one list, shared by the timestamps and every metric logged always
    _extend(points, TIMESTAMP_METRIC, steps, list(timestamps))
    return pivot_columns(steps, dicts, points, latest)


def pivot_columns(
    steps: list[int],
    dicts: list[dict[str, Any]],
    points: Points,
    latest: Optional[dict[str, float]],
) -> int:
    """Append {metric: value} dicts, one per step, to `points`; `latest` may be None. The
    `steps` list becomes the steps of the metrics every dict has (do not change it after)."""
    if not steps:
        return 0
    groups: dict[tuple[str, ...], list[int]] = {}
    key_sets = set(map(tuple, dicts))
    if len(key_sets) == 1:
        groups[key_sets.pop()] = list(range(len(steps)))
    else:
        for index, metrics in enumerate(dicts):
            groups.setdefault(tuple(metrics), []).append(index)
    bad = 0
    # Groups in order of their last row, so `latest` ends with each metric's newest value.
    for keys, indexes in sorted(groups.items(), key=lambda group: group[1][-1]):
        if len(indexes) == len(steps):
            group_steps, group_dicts = steps, dicts
        else:
            group_steps = [steps[i] for i in indexes]
            group_dicts = [dicts[i] for i in indexes]
        for name in keys:
            try:  # one C-speed pass: pick and read every value of the column
                column_steps, values = (
                    group_steps,
                    list(map(float, map(itemgetter(name), group_dicts))),
                )
            except Exception:  # a value float() cannot read: one at a time, counting them
                raw = list(map(itemgetter(name), group_dicts))
                column_steps, values, unreadable = _floats(name, raw, group_steps)
                bad += unreadable
            if values:
                _extend(points, name, column_steps, values)
                if latest is not None:
                    latest[name] = values[-1]
    return bad


def order_by_step(points: Points, only: Optional[Collection[str]] = None) -> None:
    """Put every series of `points` (or those named in `only`) in step order, in place
    (stable: a repeated step keeps its write order). Pivoting by metric-name groups can
    interleave steps; detectors and readers expect order."""
    in_order: dict[int, bool] = {}  # by id(steps): series of one group share their steps
    for name, (steps, values) in points.items():
        if only is not None and name not in only:
            continue
        ordered = in_order.get(id(steps))
        if ordered is None:
            ordered = in_order[id(steps)] = all(map(lt, steps, steps[1:]))
        if ordered:
            continue
        order = sorted(range(len(steps)), key=steps.__getitem__)
        points[name] = ([steps[i] for i in order], [values[i] for i in order])


def points_bytes(points: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> int:
    """About the memory a batch's points hold, as the backlog bound counts it."""
    total = 0
    for _, values in points.values():
        per_point = PACKED_POINT_BYTES if isinstance(values, array) else LIST_POINT_BYTES
        total += per_point * len(values)
    return total


def pack(points: Points) -> None:
    """Typed arrays instead of lists, in place, for a batch that waits in memory (storage
    failed). Every reader of a batch takes any sequence (`PointBatch`)."""
    packed: dict[str, Any] = points  # from here on its columns are arrays
    for name, (steps, values) in points.items():
        if isinstance(values, list):
            packed[name] = (array("q", steps), array("d", values))
