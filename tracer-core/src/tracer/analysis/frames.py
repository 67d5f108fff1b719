"""Runs as data: whole histories of many runs and metrics as Arrow record batches, the long
table `QueryEngine.to_arrow` returns and pandas and polars frames are made from.

The long form has one row per stored point: `run_id` and `metric` (dictionary-encoded
strings), `step` (int64), `value` (float64, NaN and +-Inf bit for bit), `time` (float64: the
wall time of that step in seconds since the epoch, from the run's `_timestamp` series; null
where the run stored none for that step) and `rank` (int32: the process rank that recorded
the run, 0 for a single process, or `r` for the per-rank series `rank/<r>/...` that rank 0
stores for every rank).

Why batches: a store holds 10^8 points, so nothing here builds Python objects per point. The
storage streams one history at a time (`StorageBackend.iter_metric_histories`: one query in
SQLite); each becomes one record batch whose value buffer is the history's float64 `array`
itself (no copy), whose steps are the int64 array the store decoded or, for the usual
contiguous steps, an `arange`. So a table costs its own size plus one history.

pyarrow, pandas and polars are optional (`tracer-core[frames]`, `[pandas]`, `[polars]`) and
imported on first use only: `import tracer` never loads them.
"""

from __future__ import annotations

import importlib
import re
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from tracer.records import TIMESTAMP_METRIC, RunRecord
from tracer.storage.base import StorageBackend

# The extra of tracer-core that installs each library.
EXTRAS = {"pyarrow": "frames", "pandas": "pandas", "polars": "polars"}
LONG_COLUMNS = ("run_id", "step", "metric", "value", "time", "rank")
_RANK_SERIES = re.compile(r"rank/(\d+)/")


def require(module: str, purpose: str) -> Any:
    """Import an optional library, or raise an ImportError naming the pip line that adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS[module]
        raise ImportError(
            f"{purpose} needs {module}, which is not installed: pip install 'tracer-core[{extra}]'"
        ) from error


def long_schema() -> Any:
    pa = require("pyarrow", "the frame API")
    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("run_id", text, nullable=False),
            pa.field("step", pa.int64(), nullable=False),
            pa.field("metric", text, nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("time", pa.float64()),
            pa.field("rank", pa.int32(), nullable=False),
        ]
    )


def rank_of(run: RunRecord, metric: str) -> int:
    """The rank a point was measured on: `r` for `rank/<r>/...`, else the run's own rank."""
    match = _RANK_SERIES.match(metric)
    return int(match.group(1)) if match else int(run.get("rank", 0) or 0)


def wanted_metric(name: str, metrics: Optional[Sequence[str]]) -> bool:
    """Whether a history belongs in the table: the metrics asked for, or every metric but
    Tracer's own `_`-prefixed series when none were named."""
    return name in metrics if metrics is not None else not name.startswith("_")


def iter_long_batches(
    storage: StorageBackend, runs: Sequence[RunRecord], metrics: Optional[Sequence[str]] = None
) -> Iterator[Any]:
    """One pyarrow RecordBatch per (run, metric) history, in the long schema, runs in the
    order given and metrics by name."""
    pa = require("pyarrow", "the frame API")
    schema = long_schema()
    by_id = {run["run_id"]: run for run in runs}
    asked = None if metrics is None else [*metrics, TIMESTAMP_METRIC]
    times: Optional[_Times] = None
    texts = {"run_id": _GrowingDictionary(), "metric": _GrowingDictionary()}
    for history in storage.iter_metric_histories(list(by_id), asked):
        steps = _int64_array(pa, history.steps)
        if history.metric == TIMESTAMP_METRIC:
            times = _Times(history.run_id, history.steps, steps, _float64_array(pa, history.values))
        if not wanted_metric(history.metric, metrics):
            continue
        count = len(history.steps)
        run = by_id[history.run_id]
        time = (
            times.at(pa, history.steps, steps)
            if times is not None and times.run_id == history.run_id
            else pa.nulls(count, pa.float64())
        )
        yield pa.RecordBatch.from_arrays(
            [
                texts["run_id"].constant(pa, history.run_id, count),
                steps,
                texts["metric"].constant(pa, history.metric, count),
                _float64_array(pa, history.values),
                time,
                pa.repeat(pa.scalar(rank_of(run, history.metric), pa.int32()), count),
            ],
            schema=schema,
        )


def long_table(
    storage: StorageBackend, runs: Sequence[RunRecord], metrics: Optional[Sequence[str]] = None
) -> Any:
    """The long table of these runs' histories (a pyarrow Table, one chunk per history)."""
    pa = require("pyarrow", "the frame API")
    return pa.Table.from_batches(list(iter_long_batches(storage, runs, metrics)), long_schema())


class _Times:
    """A run's `_timestamp` history, to look up the wall time of any step of that run."""

    def __init__(self, run_id: str, steps: Sequence[int], arrow_steps: Any, values: Any) -> None:
        self.run_id = run_id
        self.steps = steps
        self.arrow_steps = arrow_steps
        self.values = values

    def at(self, pa: Any, steps: Sequence[int], arrow_steps: Any) -> Any:
        """The times of `steps`: a zero-copy slice when they are a stretch of the timestamp
        steps (the usual case: metrics logged every step), else a hash lookup."""
        mine = self.steps
        if isinstance(steps, range) and isinstance(mine, range) and len(steps) and len(mine):
            same_stride = len(steps) == 1 or steps.step == mine.step
            offset, remainder = divmod(steps.start - mine.start, mine.step)
            if same_stride and not remainder and 0 <= offset <= len(mine) - len(steps):
                return self.values.slice(offset, len(steps))
        compute = require("pyarrow.compute", "the frame API")
        indices = compute.index_in(arrow_steps, value_set=self.arrow_steps)
        return compute.take(self.values, indices)


def _int64_array(pa: Any, steps: Sequence[int]) -> Any:
    if isinstance(steps, range):
        try:
            numpy = importlib.import_module("numpy")
        except ImportError:
            buffer: Any = array("q", steps)
        else:
            buffer = numpy.arange(steps.start, steps.stop, steps.step, dtype=numpy.int64)
    elif isinstance(steps, array) and steps.typecode == "q":
        buffer = steps
    else:
        buffer = array("q", steps)
    return pa.Array.from_buffers(pa.int64(), len(steps), [None, pa.py_buffer(buffer)])


def _float64_array(pa: Any, values: Sequence[float]) -> Any:
    buffer = values if isinstance(values, array) and values.typecode == "d" else array("d", values)
    return pa.Array.from_buffers(pa.float64(), len(buffer), [None, pa.py_buffer(buffer)])


class _GrowingDictionary:
    """A text column as dictionary arrays whose dictionaries only grow from one batch to the
    next (each the previous plus new strings): what the Arrow IPC file format accepts across
    batches (as dictionary deltas), and cheap for pandas and polars to unify."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self.dictionary: Any = None

    def constant(self, pa: Any, text: str, count: int) -> Any:
        """`count` copies of one string: 4 bytes a row."""
        position = self.positions.get(text)
        if position is None:
            position = self.positions[text] = len(self.positions)
            self.dictionary = pa.array(list(self.positions), pa.string())
        indices = pa.repeat(pa.scalar(position, pa.int32()), count)
        return pa.DictionaryArray.from_arrays(indices, self.dictionary)


def polars_frame(
    storage: StorageBackend,
    runs: Sequence[RunRecord],
    metrics: Optional[Sequence[str]] = None,
    wide: bool = False,
) -> Any:
    """The long table as a polars DataFrame, or its wide pivot (as `pandas_frame`, but a
    missing point is null, so it stays apart from a stored NaN)."""
    polars = require("polars", "to_polars")
    frame = polars.from_arrow(long_table(storage, runs, metrics))
    if not wide:
        return frame
    keys = ["run_id", "step"]
    text = frame.with_columns(polars.col("run_id").cast(polars.String))
    text = text.with_columns(polars.col("metric").cast(polars.String))
    metrics = sorted(text.get_column("metric").unique().to_list())
    values = text.pivot(on="metric", index=keys, values="value")
    times = text.group_by(keys, maintain_order=True).agg(polars.col("time").drop_nulls().first())
    pivot = times.join(values, on=keys, how="left", maintain_order="left")
    runs = list(dict.fromkeys(text.get_column("run_id").to_list()))
    position = polars.col("run_id").replace_strict(runs, list(range(len(runs))))
    pivot = pivot.sort([position, polars.col("step")])
    return pivot.select([*keys, "time", *metrics])
