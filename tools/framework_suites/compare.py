"""Run part of a framework's own test suite without and with Tracer, and compare the failures.

When: `python3 -m tox -e framework-suites` (not part of the default run), before releasing
an adapter or after a framework release; it needs a local copy of the suite, matching the
installed framework's version (README, "Framework test suites").

    python tools/framework_suites/compare.py --preset lightning
    python tools/framework_suites/compare.py --suite /tmp/suites/lightning/tests \\
        tests_pytorch/loggers -k "not neptune"

Everything this script does not know (paths, `-k`, `--deselect`, ...) goes to pytest as it
is. The selection runs twice, one after the other, in the same interpreter (`--python`): a
baseline with `attach_tracer.py` loaded but not attaching, then with `TRACER_ATTACH=1`. Each
run writes its outcomes per test as JSON (the plugin's report, rather than parsing
`--junitxml`: it has pytest's own node ids, so the differing tests can be run again, and the
phase that failed). Tests that fail in one run only are then run again alone, once in each
mode, to tell a real difference from a flaky test ("confirmed" when the rerun gives the same
difference). It prints both runs' counts, Tracer's findings (stored runs that disagree with
their Trainer, see `attach_tracer.py`), the tests that fail only with Tracer with the first
lines of their failure, and those that fail only without it.

Exit status: 1 when a test fails only with Tracer (confirmed, unless `--no-confirm`), or with
`--fail-on-findings` when Tracer stored a run that disagrees with its Trainer; 2 when a run
could not start or wrote no report; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
BAD = ("failed", "error")
COLUMNS = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")

# What `--preset NAME` runs when no selection is given. Chosen to finish in about 15 minutes
# per mode on 2 CPU cores; tests that need a GPU, a TPU or several devices skip themselves
# (Lightning's RunIf), those that need the network are left out here: Lightning's legacy
# checkpoint tests load checkpoints of past releases that its CI downloads first.
PRESETS: dict[str, dict[str, Any]] = {
    "lightning": {
        "suite": "/tmp/suites/lightning/tests",
        "selection": [
            "tests_pytorch/loggers",
            "tests_pytorch/callbacks",
            "tests_pytorch/trainer/logging_",
            "tests_pytorch/checkpointing",
        ],
        "pytest_args": ["--ignore=tests_pytorch/checkpointing/test_legacy_checkpoints.py"],
    },
    "transformers": {
        "suite": "/tmp/suites/transformers",
        "selection": ["tests/trainer/test_trainer_callback.py"],
        "pytest_args": [],
    },
}
VERSIONS = (
    "import importlib.metadata as m\n"
    "for name in ('lightning', 'pytorch-lightning', 'transformers', 'accelerate', 'torch',"
    " 'tracer-core', 'tracer-lightning', 'tracer-hf'):\n"
    "    try: print(f'{name} {m.version(name)}')\n"
    "    except m.PackageNotFoundError: pass\n"
)


def say(*parts: Any, **options: Any) -> None:
    """This command's output (its report is what it prints)."""
    print(*parts, **options)  # noqa: T201


def parse_args(argv: Optional[list[str]]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,  # an unknown --t must go to pytest, not become --timeout
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default suite and selection")
    parser.add_argument("--suite", help="folder pytest runs in: the local copy's test root")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pytest")
    parser.add_argument(
        "--timeout", type=int, default=300, help="seconds per test (pytest-timeout), 0: none"
    )
    parser.add_argument("--out", help="folder for logs and reports (default: a new temp dir)")
    parser.add_argument("--no-confirm", action="store_true", help="do not rerun differences")
    parser.add_argument("--fail-on-findings", action="store_true")
    return parser.parse_known_args(argv)


def has_module(python: str, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def run_pytest(
    python: str, suite: Path, args: list[str], attached: bool, report: Path, log: Path
) -> tuple[Optional[dict[str, Any]], float]:
    """One pytest run; its plugin report (None when it wrote none) and its wall time."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["TRACER_ATTACH"] = "1" if attached else "0"
    env["TRACER_ATTACH_REPORT"] = str(report)
    env.pop("TRACER_ATTACH_STORAGE", None)
    command = [python, "-m", "pytest", "-p", "attach_tracer", *args]
    report.unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        output.write(f"$ cd {suite} && TRACER_ATTACH={env['TRACER_ATTACH']} {' '.join(command)}\n")
        output.flush()
        subprocess.run(command, cwd=suite, env=env, stdout=output, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if not report.exists():
        return None, elapsed
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded, elapsed


def counts(report: dict[str, Any]) -> dict[str, int]:
    tally = dict.fromkeys(COLUMNS, 0)
    for test in report["tests"].values():
        tally[test["outcome"]] = tally.get(test["outcome"], 0) + 1
    return tally


def bad(report: dict[str, Any]) -> set[str]:
    return {nodeid for nodeid, test in report["tests"].items() if test["outcome"] in BAD}


def ran(report: dict[str, Any]) -> set[str]:
    return set(report["tests"])


def first_lines(text: str, lines: int = 12) -> str:
    """The crash line, then the traceback's last lines: where it failed and why."""
    kept = [line for line in text.splitlines() if line.strip()]
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join([*kept[:2], "...", *kept[-(lines - 3) :]])


def table(rows: list[tuple[str, dict[str, int], float]]) -> str:
    header = f"{'':16}" + "".join(f"{c:>9}" for c in (*COLUMNS, "total")) + f"{'minutes':>9}"
    lines = [header]
    for label, tally, elapsed in rows:
        cells = "".join(f"{tally.get(c, 0):>9}" for c in COLUMNS)
        lines.append(f"{label:16}{cells}{sum(tally.values()):>9}{elapsed / 60:>9.1f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    options, pytest_args = parse_args(argv)
    preset = PRESETS.get(options.preset or "", {})
    suite = Path(options.suite or preset.get("suite") or ".").resolve()
    if not suite.is_dir():
        say(f"no suite at {suite}: see the README, 'Framework test suites'", file=sys.stderr)
        return 2
    selection_given = any(not arg.startswith("-") for arg in pytest_args)
    selection = [] if selection_given else list(preset.get("selection", []))
    base_args = ["-q", "-p", "no:cacheprovider", "--color=no", "-rN"]
    if options.timeout and has_module(options.python, "pytest_timeout"):
        base_args.append(f"--timeout={options.timeout}")
    elif options.timeout:
        say("pytest-timeout is not installed: no per-test timeout")
    args = [*base_args, *preset.get("pytest_args", []), *selection, *pytest_args]
    out = Path(options.out) if options.out else Path(os.environ.get("TMPDIR", "/tmp"))
    if not options.out:
        out = out / f"framework-suites-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    versions = subprocess.run(
        [options.python, "-c", VERSIONS], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    say("installed:", ", ".join(v for v in versions if v))
    say(f"suite: {suite}\npytest {' '.join(args)}\nlogs and reports: {out}")

    reports: dict[str, dict[str, Any]] = {}
    elapsed: dict[str, float] = {}
    for mode in ("without", "with"):
        say(f"running {mode} Tracer ...")
        report, seconds = run_pytest(
            options.python,
            suite,
            args,
            mode == "with",
            out / f"{mode}.json",
            out / f"{mode}.log",
        )
        if report is None:
            say(f"the run {mode} Tracer wrote no report: see {out / f'{mode}.log'}")
            return 2
        reports[mode], elapsed[mode] = report, seconds
    without, with_ = reports["without"], reports["with"]
    say()
    say(
        table(
            [
                ("without Tracer", counts(without), elapsed["without"]),
                ("with Tracer", counts(with_), elapsed["with"]),
            ]
        )
    )
    say(
        f"with Tracer: {with_['trainers_attached']} Trainers attached, "
        f"{with_['stages_checked']} fit/train runs checked, runs under {with_['storage_root']}"
    )
    missing = ran(without) ^ ran(with_)
    if missing:
        say(f"{len(missing)} tests ran in one mode only: {sorted(missing)[:10]}")

    only_with = sorted(bad(with_) - bad(without))
    only_without = sorted(bad(without) - bad(with_))
    confirmed = set(only_with)
    if not options.no_confirm and (only_with or only_without):
        confirmed = rerun(options.python, suite, base_args, only_with + only_without, out, with_)

    findings = with_["findings"]
    say(f"\nTracer findings: {sum(map(len, findings.values()))} in {len(findings)} tests")
    for test, found in sorted(findings.items()):
        for message in found:
            say(f"  {test}: {message}")

    real = [t for t in only_with if t in confirmed]
    say(f"\nFail only with Tracer: {len(real)}", end="")
    if len(real) != len(only_with):
        say(f" ({len(only_with) - len(real)} more did not fail again on a rerun)", end="")
    say()
    for nodeid in only_with:
        test = with_["tests"].get(nodeid, {})
        tag = "" if nodeid in confirmed else "  (passed with Tracer on the rerun: flaky)"
        say(f"- {nodeid} [{test.get('outcome')}]{tag}")
        say("    " + first_lines(test.get("failure", "")).replace("\n", "\n    "))
    say(f"\nFail only without Tracer (flaky or order-dependent): {len(only_without)}")
    for nodeid in only_without:
        say(f"- {nodeid} [{without['tests'][nodeid]['outcome']}]")
    say(f"\nlogs and reports: {out}")
    if real:
        return 1
    if options.fail_on_findings and findings:
        return 1
    return 0


def rerun(
    python: str,
    suite: Path,
    base_args: list[str],
    nodeids: list[str],
    out: Path,
    report: dict[str, Any],
) -> set[str]:
    """Run the differing tests again, alone, once per mode; the ones that fail with Tracer
    and pass without it again."""
    root = Path(report.get("rootdir") or suite)
    targets = [str(root / nodeid) for nodeid in nodeids if "::" in nodeid]
    if not targets:
        return set(nodeids)
    say(f"running the {len(targets)} differing tests again, alone ...")
    again: dict[str, dict[str, Any]] = {}
    for mode in ("without", "with"):
        loaded, _ = run_pytest(
            python,
            suite,
            [*base_args, *targets],
            mode == "with",
            out / f"rerun-{mode}.json",
            out / f"rerun-{mode}.log",
        )
        again[mode] = loaded or {"tests": {}}
    return {
        nodeid
        for nodeid in nodeids
        if again["with"]["tests"].get(nodeid, {}).get("outcome") in BAD
        and again["without"]["tests"].get(nodeid, {}).get("outcome") not in BAD
    } | {nodeid for nodeid in nodeids if "::" not in nodeid}


if __name__ == "__main__":
    sys.exit(main())
