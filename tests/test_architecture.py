"""Packages import only downward (docs/architecture.md), and lower layers stay light: importing
them does not load plotting or training frameworks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Bottom to top: a module may import its own layer and the ones below it, never one above.
LAYERS = [
    {"files", "batches", "cli", "progress", "devices", "normalization"},
    {"snn", "models"},
    {"metrics"},
    {"conversion", "nir"},
    {"data"},
    {"training"},
    {"reporting"},
    {"deploy"},
    {"checkpoint"},
]
RANK = {name: level for level, names in enumerate(LAYERS) for name in names}


def _imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):  # function-level imports count too
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("neurocuda.")}
    return found


def test_no_package_imports_one_above_it() -> None:
    upward = []
    for path in sorted((ROOT / "neurocuda").rglob("*.py")):
        parts = path.relative_to(ROOT / "neurocuda").with_suffix("").parts
        if parts[0] == "__init__":
            continue
        assert parts[0] in RANK, f"{path}: add package {parts[0]!r} to LAYERS"
        for package in _imported_packages(path):
            assert package in RANK, f"{path} imports unknown package {package!r}"
            if RANK[package] > RANK[parts[0]]:
                upward.append(f"{'/'.join(parts)} -> neurocuda.{package}")
    assert not upward, upward


HEAVY = ("matplotlib", "lightning", "neurocuda.data", "neurocuda.training")


def _loaded_after_import(module: str) -> list[str]:
    code = (
        f"import json, sys, {module}; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("neurocuda.nir", ()),
        ("neurocuda.snn", ()),
        ("neurocuda.conversion", ()),
        # torchmetrics (deploy's accuracy) loads matplotlib itself; no training framework though
        ("neurocuda.deploy", ("matplotlib",)),
    ],
)
def test_import_does_not_load_heavy_packages(module: str, allowed: tuple[str, ...]) -> None:
    assert [m for m in _loaded_after_import(module) if m not in allowed] == []
