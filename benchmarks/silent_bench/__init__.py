"""The silent-bug benchmark of Tracer, driven by `benchmarks/bench_silent.py`.

A silent bug does not crash and produces no NaN: the run trains, but wrongly. Each bug
scenario is a small real CPU training carrying one well-known bug beside a clean twin that
shares its seed and differs only in the bug's lines; more clean runs (BatchNorm, LayerNorm,
a frozen backbone, small-lr fine-tuning, parameter-efficient tuning) count false alarms.

- `models`: the tasks and models, built from code (no downloads).
- `scenarios`: the catalogue: each bug, its onset, its tune/held split; the clean runs.
- `training`: one training loop with every bug as a switch, run under Tracer; online and
  offline anomalies read back.
- `scoring`: caught within 50 steps of onset with a report the twin does not also get;
  false alarms; the markdown tables.

Nothing here imports from `tests/`.
"""
