"""The fault benchmark of Tracer's built-in anomaly detectors, driven by
`benchmarks/bench_detection.py`.

- `models`: synthetic tasks and small models built from code (no downloads).
- `scenarios`: the frozen scenario catalogue (faulty, healthy, long synthetic runs).
- `training`: runs one scenario under Tracer and reads back the online and offline anomalies.
- `scoring`: episodes, recall, time to detect, precision, false alarms.
- `report`: the markdown tables and the pass/fail verdicts.
- `cost`: the per-step cost of online detection over a synthetic stream.

Nothing here imports from `tests/`: a benchmark must run from a plain checkout with only
tracer-core, torch and numpy installed.
"""
