"""Run a framework's own test suite with Tracer attached to every Trainer it builds.

When: before a release of an adapter, after a framework release, or after changing how an
adapter hooks in (`python3 -m tox -e framework-suites`, not part of the default test run).
Why: our own adapter tests exercise the Trainers the way we thought of; Lightning's and
transformers' suites build thousands of Trainers the ways their users do (odd callback
lists, pickled Trainers, interrupted fits, loops run by hand, ...). A test of theirs that
passes without Tracer and fails with it is a place where a user who adds Tracer breaks.

- `attach_tracer.py`: the pytest plugin. Loaded with `-p attach_tracer`; with
  `TRACER_ATTACH=1` it adds a `LightningCallback` to every Lightning `Trainer` (both
  namespaces) and a `TransformersCallback` to every `transformers.Trainer`, and checks the
  run Tracer stored after each `fit`/`train`; without it it attaches nothing, so the same
  command is the baseline. Either way it writes each test's outcome to a JSON file.
- `compare.py`: runs a selection of a local copy of a suite twice, without and with Tracer,
  and prints both counts and the tests that fail only with Tracer (exit 1 when there are any).
"""
