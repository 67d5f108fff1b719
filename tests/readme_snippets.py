"""README.md's Python snippets, each run as copied in a fresh interpreter in an empty folder.

Every ```python block of README.md is a snippet. Which test environment runs it follows from
its imports (`ENVIRONMENTS`): a snippet that imports a framework runs where tox installs that
framework (tests/hf, tests/lightning, tests/accelerate), any other in tests/core. A block that
is deliberately partial is skipped only when README marks it, on the line right before it:

    <!-- snippet: fragment -->

Everything else must run: exit 0 within `TIMEOUT_S`, with no network (the HuggingFace Hub
is switched offline), so snippets build tiny models from configs and their data in code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FRAGMENT_MARKER = "<!-- snippet: fragment -->"
TIMEOUT_S = 120.0

# The first match wins: a Lightning snippet that also imports torch runs in tests/lightning.
ENVIRONMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hf", ("transformers", "tracer_hf", "TransformersCallback")),
    ("lightning", ("lightning", "tracer_lightning", "LightningCallback", "TracerFabricLogger")),
    ("accelerate", ("accelerate", "tracer_accelerate", "AccelerateTracker")),
)
FRAME_LIBRARIES = ("pyarrow", "pandas", "polars")
FRAME_CALLS = re.compile(r"\.(to_arrow|to_pandas|to_polars|runs_frame)\(")
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+(.+)|import\s+(.+))$")


@dataclass(frozen=True)
class Snippet:
    line: int  # of the opening fence in README.md
    code: str
    fragment: bool  # marked `<!-- snippet: fragment -->`: not run

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"

    def imported(self) -> set[str]:
        """Every module (and its top-level package) and every name the snippet imports."""
        names: set[str] = set()
        for text in self.code.splitlines():
            match = _IMPORT.match(text.split("#", 1)[0].rstrip())
            if match is None:
                continue
            module, members, modules = match.groups()
            words = [module, *re.findall(r"\w+", members)] if module else _modules(modules)
            for word in words:
                names.add(word)
                names.add(word.split(".")[0])
        return names

    @property
    def environment(self) -> str:
        imported = self.imported()
        for environment, markers in ENVIRONMENTS:
            if imported & set(markers):
                return environment
        return "core"

    @property
    def needs_torch(self) -> bool:
        return "torch" in self.imported()

    @property
    def frame_libraries(self) -> set[str]:
        """The optional frame libraries it needs (`tracer-core[pandas]`): those it imports,
        and pyarrow and pandas when it calls the frame API."""
        needed = self.imported() & set(FRAME_LIBRARIES)
        if FRAME_CALLS.search(self.code):
            needed |= {"pyarrow", "pandas"}
        return needed


def _modules(text: str) -> list[str]:
    return [part.split(" as ")[0].strip() for part in text.split(",")]


def snippets(readme: Path = README) -> list[Snippet]:
    lines = readme.read_text(encoding="utf-8").splitlines()
    found: list[Snippet] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            index += 1
            body: list[str] = []
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            if index == len(lines):
                raise ValueError(f"README.md:{start + 1}: a ```python block is never closed")
            before = lines[start - 1].strip() if start > 0 else ""
            found.append(Snippet(start + 1, "\n".join(body) + "\n", before == FRAGMENT_MARKER))
        index += 1
    return found


def for_environment(environment: str) -> list[Snippet]:
    return [snippet for snippet in snippets() if snippet.environment == environment]


def run_snippet(snippet: Snippet, folder: Path) -> None:
    """Run the snippet as copied into a file of `folder`; AssertionError with its output if
    it fails."""
    script = folder / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TRACER_") and key != "PYTHONPATH"
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"{snippet.name} fails as copied (exit {result.returncode}):\n"
        f"{snippet.code}\n--- stdout ---\n{result.stdout[-4000:]}"
        f"\n--- stderr ---\n{result.stderr[-4000:]}"
    )
