"""`tracer export --format parquet|arrow`: the long table of one or many runs (one row per
point: `run_id`, `step`, `metric`, `value`, `time`, `rank`, as `QueryEngine.to_arrow`), with
what a reader needs beside the points in the file's schema metadata, as JSON:

- `tracer.runs`: the run records (id, name, project, status, times, config, tags, notes),
- `tracer.anomalies`: every anomaly episode of those runs (`QueryEngine.get_anomalies`),
- `tracer.format`: "tracer-long-1", the layout's name.

Values are float64 in the file, so NaN and +-Inf are exact; in the JSON metadata a
non-finite number is the string "nan", "inf" or "-inf" (JSON has no such numbers). The table
is written batch by batch (one per history), so an export never holds all its points.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from tracer.analysis.frames import long_schema, require
from tracer.cli.common import MissingExtra, jsonable
from tracer.records import RunRecord

if TYPE_CHECKING:
    from tracer.analysis import QueryEngine

FORMAT_NAME = "tracer-long-1"


def write_table_file(
    query: QueryEngine,
    records: Sequence[RunRecord],
    metrics: Optional[Sequence[str]],
    fmt: str,
    output: str,
) -> int:
    """Write the Parquet or Arrow IPC file; returns the number of points written."""
    try:
        pa = require("pyarrow", f"tracer export --format {fmt}")
        writer_module = require("pyarrow.parquet" if fmt == "parquet" else "pyarrow", fmt)
    except ImportError as error:
        raise MissingExtra(str(error)) from None
    run_ids = [record["run_id"] for record in records]
    schema = long_schema().with_metadata(metadata(query, records))
    if fmt == "parquet":
        writer: Any = writer_module.ParquetWriter(output, schema)
    else:
        options = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
        writer = pa.ipc.new_file(output, schema, options=options)
    points = 0
    with writer:
        for batch in query.arrow_batches(run_ids, metrics or None):
            writer.write_batch(batch)
            points += batch.num_rows
    return points


def metadata(query: QueryEngine, records: Sequence[RunRecord]) -> dict[str, str]:
    runs = [dict(record) for record in records]
    anomalies = [a for record in records for a in query.get_anomalies(record["run_id"])]
    return {
        "tracer.format": FORMAT_NAME,
        "tracer.runs": json.dumps(jsonable(runs), allow_nan=False),
        "tracer.anomalies": json.dumps(jsonable(anomalies), allow_nan=False),
    }
