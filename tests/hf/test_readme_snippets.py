"""README.md's snippets that import the hf integration, run as copied in a fresh interpreter
(tests/readme_snippets.py; the others run in tests/core and the other framework folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readme_snippets import FRAGMENT_MARKER, Snippet, for_environment, run_snippet


@pytest.mark.slow
@pytest.mark.parametrize("snippet", for_environment("hf"), ids=lambda s: s.name)
def test_snippet_runs_as_copied(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.fragment:
        pytest.skip(f"{snippet.name} is marked {FRAGMENT_MARKER}")
    run_snippet(snippet, tmp_path)
