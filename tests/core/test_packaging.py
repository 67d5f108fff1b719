"""Import cost and the lazy integration names: nothing heavy or surprising at import."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_import_tracer_loads_no_torch_no_plugins_no_pydantic() -> None:
    loaded = _run(
        "import sys, tracer, tracer.integrations; "
        "print(sorted(m for m in ('torch', 'pluggy', 'pydantic', 'sqlite3', 'transformers',"
        " 'lightning', 'accelerate') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_missing_adapter_names_the_pip_command() -> None:
    import importlib.util

    import tracer.integrations

    for name, extra in (
        ("TransformersCallback", "hf"),
        ("LightningCallback", "lightning"),
        ("AccelerateTracker", "accelerate"),
    ):
        module = {
            "hf": "tracer_hf",
            "lightning": "tracer_lightning",
            "accelerate": "tracer_accelerate",
        }[extra]
        if importlib.util.find_spec(module) is not None:
            continue  # the adapter is installed in this environment
        with pytest.raises(ImportError, match=rf"pip install 'tracer-core\[{extra}\]'"):
            getattr(tracer.integrations, name)
    with pytest.raises(AttributeError):
        tracer.integrations.NoSuchCallback  # noqa: B018


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("tracer").joinpath("py.typed").is_file()
