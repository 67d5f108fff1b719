"""README.md's snippets that need only tracer-core (and torch), run as copied; the framework
ones run in tests/hf, tests/lightning and tests/accelerate (tests/readme_snippets.py)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_snippets import (
    ENVIRONMENTS,
    FRAGMENT_MARKER,
    Snippet,
    for_environment,
    run_snippet,
    snippets,
)


@pytest.mark.slow
@pytest.mark.parametrize("snippet", for_environment("core"), ids=lambda s: s.name)
def test_snippet_runs_as_copied(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.fragment:
        pytest.skip(f"{snippet.name} is marked {FRAGMENT_MARKER}")
    if snippet.needs_torch and importlib.util.find_spec("torch") is None:
        pytest.skip(f"{snippet.name} needs torch")
    missing = sorted(m for m in snippet.frame_libraries if importlib.util.find_spec(m) is None)
    if missing:
        pytest.skip(f"{snippet.name} needs {', '.join(missing)} (tracer-core[pandas])")
    run_snippet(snippet, tmp_path)


def test_every_environment_has_its_snippets() -> None:
    """The split by imports finds the README's framework sections (a renamed import would
    otherwise move a snippet to an environment that cannot run it)."""
    found = {snippet.environment for snippet in snippets()}
    assert found == {"core", *(name for name, _ in ENVIRONMENTS)}


def test_markers_sit_right_before_a_python_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"{FRAGMENT_MARKER}\n```python\nloss.backward()\n```\n\n```python\nimport tracer\n```\n"
        "```bash\ntracer runs\n```\n",
        encoding="utf-8",
    )
    found = snippets(readme)
    assert [(s.line, s.fragment, s.environment) for s in found] == [
        (2, True, "core"),
        (6, False, "core"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("under_tox", [True, False], ids=["run-by-tox", "env-off-path"])
def test_the_demo_prints_tracer_commands_that_run(tmp_path: Path, under_tox: bool) -> None:
    """The demo's last lines name `tracer` commands a newcomer types as printed: from the repo
    root, in a shell without the env's bin on PATH (as after `python3 -m tox -e demo`: tox
    puts it on PATH only for the demo's own process)."""
    pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACER_")}
    env.pop("TOX_ENV_NAME", None)
    env["PATH"] = os.defpath  # the user's shell afterwards
    demo_env = dict(env)
    if under_tox:  # what tox gives the demo: its env first on PATH, and its name
        demo_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.defpath])
        demo_env["TOX_ENV_NAME"] = "demo"
    demo = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "train_and_inspect.py"),
            "--steps",
            "30",
            "--storage",
            str(tmp_path / "store"),
            "--report",
            str(tmp_path / "report.html"),
        ],
        cwd=root,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    commands = [
        line.split(":", 1)[1] for line in demo.stdout.splitlines() if "Explore further:" in line
    ]
    assert len(commands) == 1, demo.stdout
    shown = subprocess.run(
        shlex.split(commands[0]), cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "finished" in shown.stdout
