"""pytest plugin: Tracer on every Trainer a framework's own test suite builds.

Load it with `-p attach_tracer` (this folder on PYTHONPATH; `compare.py` does both). It acts
on the environment:

- `TRACER_ATTACH=1`: every Lightning `Trainer` (`lightning.pytorch` and `pytorch_lightning`)
  gets a `LightningCallback` appended to its `callbacks=` argument, and every
  `transformers.Trainer` gets a `TransformersCallback` (`add_callback` after its
  `__init__`), each with `project="attached"`, `track_system_metrics=False` and a storage
  folder of its own per test under a temporary directory, never the suite's working
  directory (Lightning's suite fails a test that leaves files in its tree). A framework is
  patched only once the suite has imported its Trainer module, so the baseline and the
  attached run import the same things, and a suite of one framework never pays for the
  other's import.
- Without it (or `TRACER_ATTACH=0`) nothing is patched or imported: the same command gives
  the baseline.
- `TRACER_ATTACH_REPORT=<file>`: each test's outcome (passed, failed, error, skipped, ...),
  the first lines of its failure, and the Tracer findings, written as JSON at the end of
  the session, in both modes; `compare.py` reads two of them.
- `TRACER_ATTACH_STORAGE=<dir>`: where the runs go (default: a new temporary directory,
  kept, named in the summary, so a finding can be inspected with `tracer runs --storage`).

Findings. After each `fit` (Lightning) or `train` (transformers) returns or raises, the run
Tracer stored for that Trainer is read back with `QueryEngine`: a fit that finished must give
a run "finished" with `total_steps == trainer.global_step` (`state.global_step` for
transformers), no metric with two rows at one step, and no row past that step; a fit that
raised or was interrupted must give a run that is not "running", with the same
`total_steps`. `validate`/`test` must leave the run ended. After each test, a run still
open is reported (and then finished as failed, so it does not leak into the next test).
Findings never fail the framework's test (they are neither raised nor warned during the test,
as some tests assert that no warning was emitted): they are listed at the end of the session
and in the report.
"""

from __future__ import annotations

import functools
import importlib.abc
import json
import os
import re
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest

PROJECT = "attached"
MARK = "_tracer_suite_attached"  # set on the callbacks this plugin adds, and on patched methods
LIGHTNING_TRAINER_MODULES = (
    "lightning.pytorch.trainer.trainer",
    "pytorch_lightning.trainer.trainer",
)
TRANSFORMERS_TRAINER_MODULE = "transformers.trainer"
MAX_FAILURE_TEXT = 6000


def enabled() -> bool:
    """Whether Tracer is attached in this session (`TRACER_ATTACH=1`)."""
    return os.environ.get("TRACER_ATTACH", "0").strip().lower() in ("1", "true", "yes", "on")


class _State:
    """What the session knows: the test going on, its storage folder, the callbacks attached
    during it, and what was found."""

    def __init__(self) -> None:
        self.storage_root: Optional[Path] = None
        self.test: Optional[str] = None
        self.test_index = 0
        self.storage: Optional[str] = None
        self.attached: weakref.WeakSet[Any] = weakref.WeakSet()
        self.findings: dict[str, list[str]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.storages: dict[str, str] = {}
        self.trainers_attached = 0
        self.stages_checked = 0
        self.patched: set[str] = set()
        self.patching = False
        self.expected_open: set[str] = set()  # runs the adapter documents as ended later
        self.checked_runs: dict[str, tuple[str, int]] = {}  # run id: (status, total_steps)

    def storage_for_test(self) -> str:
        """The storage folder of the test going on (made on first use)."""
        if self.storage is None:
            assert self.storage_root is not None
            label = re.sub(r"[^A-Za-z0-9_.-]+", "_", (self.test or "outside-tests").split("/")[-1])
            folder = self.storage_root / f"{self.test_index:05d}-{label[:80]}"
            folder.mkdir(parents=True, exist_ok=True)
            self.storage = str(folder)
            if self.test is not None:
                self.storages[self.test] = self.storage
        return self.storage

    def find(self, message: str) -> None:
        self.findings.setdefault(self.test or "<outside tests>", []).append(message)


STATE = _State()


# -- attaching ------------------------------------------------------------------------------
def _settings() -> dict[str, Any]:
    return {"storage_path": STATE.storage_for_test(), "track_system_metrics": False}


def _attached(callback_class: Any) -> Any:
    """A Tracer callback of `callback_class` for the test that is running, counted."""
    callback = callback_class(project=PROJECT, **_settings())
    setattr(callback, MARK, True)
    STATE.attached.add(callback)
    STATE.trainers_attached += 1
    return callback


def _new_lightning_callback() -> Any:
    from tracer_lightning import LightningCallback

    return _attached(LightningCallback)


def _new_transformers_callback() -> Any:
    from tracer_hf import TransformersCallback

    return _attached(TransformersCallback)


def _ours(callbacks: Any) -> Any:
    """The callback this plugin attached, among a Trainer's callbacks, or None."""
    for callback in callbacks or []:
        if getattr(callback, MARK, False):
            return callback
    return None


def _wrap_stage(
    cls: type, name: str, check: Callable[[Any, str, Any, Any, Optional[BaseException]], None]
) -> None:
    """Wrap `cls.<name>` (fit, validate, test, train) so `check` runs after it, however it
    ends. The check gets the run the callback held before, to tell a run this call made."""
    original = getattr(cls, name)
    if getattr(original, MARK, False):
        return

    @functools.wraps(original)
    def stage(self: Any, *args: Any, **kwargs: Any) -> Any:
        callback = _callback_of(self)
        before = getattr(callback, "run", None)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as error:
            check(self, name, callback, before, error)
            raise
        check(self, name, callback, before, None)
        return result

    setattr(stage, MARK, True)
    setattr(cls, name, stage)


def _callback_of(trainer: Any) -> Any:
    handler = getattr(trainer, "callback_handler", None)  # transformers
    if handler is not None:
        return _ours(getattr(handler, "callbacks", None))
    return _ours(getattr(trainer, "callbacks", None))  # Lightning


def _patch_lightning(module: Any) -> None:
    """Lightning: `callbacks=` gets a LightningCallback (a new list; the test's own list is
    left as it was), as a user adds one."""
    trainer_cls = module.Trainer
    original_init = trainer_cls.__init__
    if getattr(original_init, MARK, False):
        return

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("callbacks")
        if given is None:
            callbacks: list[Any] = []
        elif isinstance(given, (list, tuple)):
            callbacks = list(given)
        else:  # Lightning accepts a single callback
            callbacks = [given]
        kwargs["callbacks"] = [*callbacks, _new_lightning_callback()]
        original_init(self, *args, **kwargs)

    setattr(__init__, MARK, True)
    trainer_cls.__init__ = __init__
    for name in ("fit", "validate", "test"):
        _wrap_stage(trainer_cls, name, _check_lightning_stage)


def _patch_transformers(module: Any) -> None:
    """transformers: `add_callback(TransformersCallback(...))` once the Trainer is built (its
    subclasses, Seq2SeqTrainer and the rest, go through this `__init__`)."""
    trainer_cls = module.Trainer
    original_init = trainer_cls.__init__
    if getattr(original_init, MARK, False):
        return

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if _callback_of(self) is None:  # a subclass's __init__ calling ours twice
            self.add_callback(_new_transformers_callback())

    setattr(__init__, MARK, True)
    trainer_cls.__init__ = __init__
    _wrap_stage(trainer_cls, "train", _check_transformers_train)


def patch_imported_frameworks() -> None:
    """Patch the Trainer classes whose modules the suite has imported so far."""
    if STATE.patching:  # importing tracer_lightning imports the other namespace: no re-entry
        return
    STATE.patching = True
    try:
        if any(name in sys.modules for name in LIGHTNING_TRAINER_MODULES):
            import tracer_lightning  # noqa: F401  (imports every installed namespace)
        for name in LIGHTNING_TRAINER_MODULES:
            if name in sys.modules and name not in STATE.patched:
                STATE.patched.add(name)
                _patch_lightning(sys.modules[name])
        if TRANSFORMERS_TRAINER_MODULE in sys.modules and "transformers" not in STATE.patched:
            STATE.patched.add("transformers")
            import tracer_hf  # noqa: F401

            _patch_transformers(sys.modules[TRANSFORMERS_TRAINER_MODULE])
    finally:
        STATE.patching = False


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Patches a framework as soon as a test imports it, for tests that import it inside
    the test function. It watches the packages whose import completes the Trainer module
    (`lightning.pytorch`, not its `trainer.trainer` that the package is still importing)."""

    WATCHED = frozenset({"lightning.pytorch", "pytorch_lightning", TRANSFORMERS_TRAINER_MODULE})

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        execute = getattr(loader, "exec_module", None)
        if execute is None:
            return spec

        def exec_module(module: Any) -> None:
            execute(module)
            patch_imported_frameworks()

        loader.exec_module = exec_module
        return spec


# -- checking what was stored ---------------------------------------------------------------
def _stored(run: Any) -> dict[str, Any]:
    """The stored summary of `run`, and per metric its steps."""
    from tracer.analysis import QueryEngine

    with QueryEngine(storage_path=str(run.config.storage_path)) as query:
        summary = query.get_run_summary(run.run_id)
        steps = {
            metric["name"]: query.get_metric_history(run.run_id, metric["name"])["steps"]
            for metric in query.storage.list_metrics(run.run_id)
        }
    summary["metric_steps"] = steps
    return summary


def _check_run(
    framework: str, stage: str, run: Any, global_step: int, finished: bool, error: Any
) -> None:
    """Compare the stored run with the Trainer it traced; each difference is a finding.

    A fit that raised mid-step may hold rows at `global_step + 1`: the gradients of the step
    being taken are captured before the optimizer steps (what a crash report needs), while
    `total_steps` counts the steps done."""
    STATE.stages_checked += 1
    label = f"{framework} {stage}"
    if run.active:
        STATE.find(f"{label}: the run {run.run_id} is still running after {stage} returned")
        return
    stored = _stored(run)
    status, total = stored["status"], stored["total_steps"]
    ended = "finished" if finished else f"raised {type(error).__name__}" if error else "stopped"
    earlier = STATE.checked_runs.get(run.run_id)
    STATE.checked_runs[run.run_id] = (status, total)
    if not finished and earlier is not None and (status, total) == earlier:
        # documented: a resume that fails before its first step (a checkpoint that does not
        # fit the Trainer's settings) leaves the run as it was stored
        return
    # A continuation that trained and then failed is a failed run, as documented; one that
    # failed before it trained past the earlier end (restoring a checkpoint, say) has
    # rewritten a finished training as failed.
    if earlier is not None and earlier[0] == "finished" != status and total <= earlier[1]:
        STATE.find(
            f"{label} {ended}: it continued the run {run.run_id}, finished by an earlier "
            f"fit with total_steps {earlier[1]}, without training past that, and the run "
            f"now reads {status!r} with total_steps {total} ({stored['error']})"
        )
    if finished and status != "finished":
        STATE.find(f"{label} finished but the run is {status!r} ({stored['error']})")
    if not finished and status in ("finished", "running"):
        STATE.find(f"{label} {ended} but the run is {status!r}")
    if total != global_step:
        STATE.find(f"{label} {ended}: total_steps {total} != global_step {global_step}")
    repeated = {
        metric: sorted({s for s in steps if steps.count(s) > 1})[:5]
        for metric, steps in stored["metric_steps"].items()
        if len(set(steps)) != len(steps)
    }
    if repeated:
        STATE.find(f"{label} {ended}: several rows at one step: {_some(repeated)}")
    limit = global_step if finished else global_step + 1
    past = {
        metric: max(steps)
        for metric, steps in stored["metric_steps"].items()
        if steps and max(steps) > limit
    }
    if past:
        STATE.find(
            f"{label} {ended}: rows past global_step {global_step} (last step per metric): "
            f"{_some(past)}"
        )


def _some(values: dict[str, Any], shown: int = 6) -> str:
    listed = ", ".join(f"{name}: {value}" for name, value in list(values.items())[:shown])
    more = len(values) - shown
    return listed + (f" and {more} more" if more > 0 else "")


def _check_lightning_stage(
    trainer: Any, stage: str, callback: Any, before: Any, error: Optional[BaseException]
) -> None:
    try:
        run = getattr(callback, "run", None)
        if callback is None or run is None:
            return  # not attached (the test replaced the callbacks), or ran in other processes
        if run is before and not run.active and error is not None:
            return  # the stage raised before it reached Tracer; the old run is untouched
        status = getattr(getattr(trainer.state, "status", None), "value", None)
        finished = error is None and status == "finished"
        if stage != "fit":
            if run.active:
                STATE.find(f"lightning {stage}: the run {run.run_id} is still running after it")
            return
        _check_run("lightning", stage, run, int(trainer.global_step), finished, error)
    except Exception as problem:  # a check must never break the suite's test
        STATE.find(f"lightning {stage}: the check itself failed: {problem!r}")


def _check_transformers_train(
    trainer: Any, stage: str, callback: Any, before: Any, error: Optional[BaseException]
) -> None:
    try:
        run = getattr(callback, "run", None)
        if callback is None or run is None or (run is before and error is not None):
            return
        if error is not None and run.active:
            # documented: HF has no exception event; ended at the next train() or at exit
            STATE.expected_open.add(run.run_id)
            return
        _check_run("transformers", stage, run, int(trainer.state.global_step), error is None, error)
    except Exception as problem:
        STATE.find(f"transformers {stage}: the check itself failed: {problem!r}")


def _close_open_runs() -> None:
    """After a test: report a run left open, and end it so it cannot leak into the next."""
    for callback in list(STATE.attached):
        run = getattr(callback, "run", None)
        if run is None or not run.active:
            continue
        if run.run_id not in STATE.expected_open:
            name = type(callback).__name__
            STATE.find(f"the run {run.run_id} ({name}) was still open after the test")
        try:
            run.finish("failed", error="left open at the end of a framework test")
        except Exception as problem:
            STATE.find(f"finishing the open run {run.run_id} failed: {problem!r}")
    STATE.attached = weakref.WeakSet()
    STATE.expected_open.clear()
    STATE.checked_runs.clear()


# -- pytest hooks ---------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    if not enabled():
        return
    given = os.environ.get("TRACER_ATTACH_STORAGE")
    if given:
        STATE.storage_root = Path(given)
        STATE.storage_root.mkdir(parents=True, exist_ok=True)
    else:
        STATE.storage_root = Path(tempfile.mkdtemp(prefix="tracer-attached-"))
    sys.meta_path.insert(0, _PatchAfterImport())
    patch_imported_frameworks()


def pytest_collection_finish(session: pytest.Session) -> None:
    if enabled():
        patch_imported_frameworks()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: it may import a framework lazily, and builds Trainers."""
    STATE.test = item.nodeid
    STATE.test_index += 1
    STATE.storage = None
    if enabled():
        patch_imported_frameworks()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Any:
    """After the test's own fixtures are torn down (Lightning's look for left-over threads):
    what is still open is reported and ended."""
    try:
        return (yield)
    finally:
        if enabled():
            _close_open_runs()
        STATE.test = None
        STATE.storage = None


def _outcome(reports: dict[str, Any]) -> str:
    """One word per test, as pytest's summary counts it (a teardown error over a pass)."""
    setup, call, teardown = (reports.get(p) for p in ("setup", "call", "teardown"))
    if call is not None and hasattr(call, "wasxfail"):
        return "xfailed" if call.skipped else "xpassed"
    if call is not None and call.failed:
        return "failed"
    if (setup is not None and setup.failed) or (teardown is not None and teardown.failed):
        return "error"
    if (setup is not None and setup.skipped) or (call is not None and call.skipped):
        return "skipped"
    return "passed"


def _first_lines(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = report.longreprtext or ""
    head = f"{crash.path}:{crash.lineno}: {crash.message}\n" if crash is not None else ""
    return (head + text)[:MAX_FAILURE_TEXT]


_PHASES: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _PHASES.setdefault(report.nodeid, {})[report.when] = report
    if report.when != "teardown":
        return
    reports = _PHASES.pop(report.nodeid)
    outcome = _outcome(reports)
    failure = "\n".join(f"[{when}] {_first_lines(r)}" for when, r in reports.items() if r.failed)
    STATE.outcomes[report.nodeid] = {
        "outcome": outcome,
        "failure": failure,
        "duration": round(sum(r.duration for r in reports.values()), 3),
    }


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        STATE.outcomes[report.nodeid or "<collection>"] = {
            "outcome": "error",
            "failure": f"[collect] {report.longreprtext[:MAX_FAILURE_TEXT]}",
            "duration": 0.0,
        }


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not enabled():
        return
    write = terminalreporter.write_line
    terminalreporter.section("Tracer attached")
    write(
        f"{STATE.trainers_attached} Trainers got Tracer; {STATE.stages_checked} stages "
        f"checked; runs stored under {STATE.storage_root}"
    )
    count = sum(len(found) for found in STATE.findings.values())
    write(f"{count} findings in {len(STATE.findings)} tests")
    for test, found in STATE.findings.items():
        for message in found:
            write(f"FINDING {test}: {message}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("TRACER_ATTACH_REPORT")
    if not target:
        return
    report = {
        "attached": enabled(),
        "written": time.time(),
        "exitstatus": int(exitstatus),
        "rootdir": str(session.config.rootpath),
        "storage_root": str(STATE.storage_root) if STATE.storage_root else None,
        "trainers_attached": STATE.trainers_attached,
        "stages_checked": STATE.stages_checked,
        "tests": STATE.outcomes,
        "findings": STATE.findings,
        "storages": STATE.storages,
    }
    Path(target).write_text(json.dumps(report, indent=1, sort_keys=True))
