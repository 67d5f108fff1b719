"""README.md's snippets that need only tracer-core (and torch), run as copied; the framework
ones run in tests/hf, tests/lightning and tests/accelerate (tests/readme_snippets.py)."""

from __future__ import annotations

import importlib.util
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
