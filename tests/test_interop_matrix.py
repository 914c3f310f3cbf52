"""scripts/interop_matrix.py: our rows, error classification, the table, and one importer (CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from neurocuda.nir import save
from scripts.interop_matrix import (
    Row,
    build_cases,
    classify_error,
    importer_rows,
    load_model,
    markdown_table,
    our_rows,
)


@pytest.fixture(scope="module")
def tiny_cases():
    model, ann, images = load_model(None, images=4, seed=0)
    cases, extra = build_cases(ann, images, [images], timesteps=4)
    return model, cases, extra


def test_our_executor_rows_are_exact_for_exact_profiles(tiny_cases):
    model, cases, extra = tiny_cases
    rows = {(row.importer.split()[0], row.profile): row for row in our_rows(model, cases, extra)}
    for profile in ("faithful", "portable"):
        assert rows["neurocuda", profile].native_max_abs_diff == 0.0
    assert rows["nirtorch", "faithful"].max_abs_diff == 0.0
    for profile in ("portable-soft", "portable-hard", "spikingjelly", "snntorch", "norse"):
        assert rows["neurocuda", profile].native_agreement == 1.0
    assert rows["neurocuda", "sinabs"].runs  # sinabs' semantics: compared, not required equal


def test_snntorch_runs_its_profile_identically_to_our_executor(tiny_cases, tmp_path: Path):
    """The CI subset of the matrix: snntorch (a dev extra, no dependencies of its own) runs the
    `snntorch` profile of a small cifarnet with max abs diff 0.0 against our executor."""
    import snntorch  # a dev extra: pip install -e ".[dev]"

    model, cases, _ = tiny_cases
    for profile, case in cases.items():
        save(case.graph, tmp_path / f"{profile}.nir")
        np.save(tmp_path / f"{profile}.npy", case.inputs)
    label = f"snntorch {snntorch.__version__}"
    rows = importer_rows("snntorch", Path(sys.executable), label, model, cases, tmp_path, 300.0)
    by_profile = {row.profile: row for row in rows}
    own = by_profile["snntorch"]
    assert own.runs, own.reason
    assert own.agreement == 1.0 and own.max_abs_diff == 0.0
    assert own.native_agreement == 1.0
    # snntorch 1.0.0 imports nir.IF as Leaky(beta=0.9): the plain IF profile is not identical
    hard = by_profile["portable-hard"]
    assert not (hard.runs and hard.max_abs_diff == 0.0)


def test_classify_error_names_the_node_type_and_nir_version() -> None:
    types = {"integrator": "I", "_2_1": "Scale"}
    versions = "sinabs 3.1.3 (nir 1.0.4)"
    assert classify_error("KeyError: 'integrator'", types, versions).startswith(
        "no mapping for `I` (node `integrator`)"
    )
    unknown = "ValueError: Unknown node type <class 'nir.ir.linear.Scale'>, mapping does not exist"
    assert classify_error(unknown, types, versions).startswith("no mapping for `Scale`;")
    keyword = "TypeError: IF.__init__() got an unexpected keyword argument 'v_reset'"
    assert classify_error(keyword, types, versions).startswith("nir 1.0.4 cannot read `IF.v_reset`")
    other = "RuntimeError: " + "x" * 200
    assert classify_error(other, types, versions) == f"`{other[:117]}...`"


def test_markdown_table_formats_and_escapes_cells() -> None:
    rows = [
        Row("m", "ours", "faithful", True, 1.0, 0.0, 1.0, 0.0),
        Row("m", "lib", "portable-hard", False, reason="a | b"),
        Row("m", "lib", "portable-soft", True, 0.5, 6.0412345, 0.25, 1e-7, "starts at v_reset"),
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| model | importer | profile | runs? |")
    assert lines[1] == "|" + "---|" * 9
    assert lines[2] == "| m | ours | faithful | yes | 100% | 0 | 100% | 0 | - |"
    assert lines[3] == "| m | lib | portable-hard | no | - | - | - | - | a \\| b |"
    assert (
        lines[4]
        == "| m | lib | portable-soft | yes | 50% | 6.04 | 25% | 1e-07 | starts at v_reset |"
    )


def test_the_runner_accepts_every_convention_a_file_records() -> None:
    from neurocuda.nir.metadata import RESET_CONVENTIONS
    from scripts.interop_runner import CONVENTIONS

    assert set(CONVENTIONS) == set(RESET_CONVENTIONS)
