"""The report's one inline script: the dashboard's chart modules, bundled at build time.

A report is a file opened from disk, where a browser will not load ES modules (no server, and
an inline `<script>` cannot `import`). So the modules the report shares with the dashboard
(`tracer/web/`: uPlot, colours, escaping, charts, heatmap, tables, series groups) and the
report's own `report.js` are joined here into one classic script, in dependency order, each
module in its own function scope:

    __modules["charts.js"] = (() => {
      const uPlot = __modules["vendor/uplot/uPlot.esm.js"].default;  // import uPlot from
      const { el, fill } = __modules["escape.js"];                    // import { el, fill } from
      function smooth(values, weight) { ... }                         // export function smooth
      ...
      return { smooth, MetricChart };
    })();

Only the statement forms these modules use are understood, each on one line at the start of a
line outside a `/* */` comment: `import NAME from "./x.js";`, `import { a, b as c } from
"./x.js";`, `export function` / `export async function` / `export const` / `export let` /
`export class NAME`, and `export { NAME as default };`. Anything else starting with `import`
or `export` raises `BundleError`, so a new form in a shared module fails the report's tests
instead of shipping a broken page. The whole bundle runs inside one more function, so it
defines no globals.

The files are read with `importlib.resources` from `tracer/web/` (a folder of static files
shared with the dashboard, on no floor: `report` never imports `ui`) and from this package.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from importlib import resources

__all__ = ["MODULES", "BundleError", "bundle", "shared_css", "web_text"]

# (folder, path) in dependency order: a module comes after every module it imports.
MODULES: tuple[tuple[str, str], ...] = (
    ("web", "vendor/uplot/uPlot.esm.js"),
    ("web", "colors.js"),
    ("web", "escape.js"),
    ("web", "groups.js"),
    ("web", "charts.js"),
    ("web", "heatmap.js"),
    ("web", "tables.js"),
    ("report", "report.js"),
)
CSS_FILES = ("vendor/uplot/uPlot.min.css", "views.css")
LICENCE = "vendor/uplot/LICENSE"

_DEFAULT_IMPORT = re.compile(r'^import (\w+) from "([^"]+)";\s*$')
_NAMED_IMPORT = re.compile(r'^import \{([^}]*)\} from "([^"]+)";\s*$')
_EXPORT_DECLARATION = re.compile(r"^export ((?:async )?function\*? |const |let |class )(\w+)")
_EXPORT_DEFAULT = re.compile(r"^export \{ ?(\w+) as default ?\};\s*$")


class BundleError(ValueError):
    """A shared module uses an import or export form the bundler does not know."""


def web_text(path: str) -> str:
    """A file of `tracer/web/`, the static files the dashboard and the report share."""
    return resources.files("tracer").joinpath("web", *path.split("/")).read_text(encoding="utf-8")


def _source(folder: str, path: str) -> str:
    if folder == "web":
        return web_text(path)
    return resources.files("tracer.report").joinpath(path).read_text(encoding="utf-8")


def _named(names: str) -> str:
    """`a, b as c` -> `a, b: c` (destructuring)."""
    parts = []
    for item in names.split(","):
        words = item.split()
        if len(words) == 1:
            parts.append(words[0])
        elif len(words) == 3 and words[1] == "as":
            parts.append(f"{words[0]}: {words[2]}")
        elif words:
            raise BundleError(f"cannot bundle the import of {item.strip()!r}")
    return ", ".join(parts)


def module_body(path: str, text: str, known: Sequence[str]) -> str:
    """One module as a function scope that returns its exports (see the module docstring)."""
    exports: list[str] = []
    lines = []
    in_comment = False  # inside a /* ... */ block (uPlot keeps an old `export` in one)
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        was_comment = in_comment
        opened, closed = line.rfind("/*"), line.rfind("*/")
        in_comment = opened > closed if opened >= 0 else in_comment and closed < 0
        if was_comment:
            lines.append(line)
        elif line.startswith("import"):
            found = _DEFAULT_IMPORT.match(line) or _NAMED_IMPORT.match(line)
            if found is None:
                raise BundleError(f"{where}: unknown import form: {line}")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), found[2]))
            if target not in known:
                raise BundleError(f"{where}: imports {target}, not bundled before it")
            if _DEFAULT_IMPORT.match(line):
                lines.append(f'const {found[1]} = __modules["{target}"].default;')
            else:
                lines.append(f'const {{ {_named(found[1])} }} = __modules["{target}"];')
        elif line.startswith("export"):
            declared = _EXPORT_DECLARATION.match(line)
            default = _EXPORT_DEFAULT.match(line)
            if declared is not None:
                exports.append(declared[2])
                lines.append(line[len("export ") :])
            elif default is not None:
                exports.append(f"default: {default[1]}")
            else:
                raise BundleError(f"{where}: unknown export form: {line}")
        else:
            lines.append(line)
    body = "\n".join(lines)
    return (
        f'__modules["{path}"] = (() => {{\n"use strict";\n{body}\n'
        f"return {{ {', '.join(exports)} }};\n}})();"
    )


def bundle() -> str:
    """The report's script: uPlot's licence, then every module of MODULES in order."""
    licence = web_text(LICENCE).strip().replace("*/", "* /")
    parts = [
        "/* Tracer report: the dashboard's chart modules bundled into one script (uPlot, MIT):\n\n"
        f"{licence}\n*/",
        "(() => {",
        "const __modules = {};",
    ]
    done: list[str] = []
    for folder, path in MODULES:
        parts.append(module_body(path, _source(folder, path), done))
        done.append(path)
    parts.append("})();")
    script = "\n".join(parts)
    lowered = script.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise BundleError("a bundled module contains </script or <!--, which would end the tag")
    return script


def shared_css() -> str:
    """uPlot's stylesheet and the views' (panels, tables, charts, heatmap) from tracer/web/."""
    return "\n".join(web_text(path) for path in CSS_FILES)
