"""The layers import one way: core knows neither Qt nor torch; engine knows no Qt."""

import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(getattr(package, "__path__", []), package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def loaded_after_importing(package: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sdstudio.core", {"PySide6", "torch", "diffusers", "transformers"}),
        # every engine module imports without torch: torch loads only when a model runs
        ("sdstudio.engine", {"PySide6", "torch", "diffusers", "transformers"}),
        ("sdstudio.cli", {"PySide6", "torch", "diffusers", "transformers"}),
    ],
)
def test_importing_a_layer_loads_no_forbidden_package(package, forbidden):
    assert loaded_after_importing(package) & forbidden == set()


def test_core_imports_nothing_of_ours_outside_core():
    import pathlib
    import re

    root = pathlib.Path(__file__).parents[1] / "sdstudio" / "core"
    pattern = re.compile(r"^\s*(from|import)\s+sdstudio\.(engine|qt|cli|app)\b", re.M)
    offenders = [p.name for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
