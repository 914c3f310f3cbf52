"""Lower layers stay light: importing them does not load plotting or training frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

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
        # torchmetrics (deploy's accuracy) loads matplotlib itself; no training framework though
        ("neurocuda.deploy", ("matplotlib",)),
    ],
)
def test_import_does_not_load_heavy_packages(module: str, allowed: tuple[str, ...]) -> None:
    assert [m for m in _loaded_after_import(module) if m not in allowed] == []
