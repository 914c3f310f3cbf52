"""scripts/interop_matrix.py without venvs: graph reduction, error classification, table output."""

from __future__ import annotations

import itertools

import nir
import numpy as np
import torch

from neurocuda.nir import Executor
from scripts.interop_matrix import Row, classify_error, markdown_table, reduce_portable


def _portable_chain() -> nir.NIRGraph:
    """Input -> Affine -> IF -> Scale(theta) -> Affine -> I -> Output, as the portable export."""
    rng = np.random.default_rng(0)
    theta = np.full(4, 0.75, dtype=np.float32)
    nodes = {
        "input": nir.Input(input_type=np.array([3])),
        "fc1": nir.Affine(
            weight=rng.normal(size=(4, 3)).astype(np.float32),
            bias=rng.normal(size=4).astype(np.float32),
        ),
        "if1": nir.IF(r=np.ones(4, np.float32), v_threshold=theta / 2, v_reset=-theta / 2),
        "scale1": nir.Scale(scale=theta),
        "fc2": nir.Affine(
            weight=rng.normal(size=(2, 4)).astype(np.float32),
            bias=rng.normal(size=2).astype(np.float32),
        ),
        "out_i": nir.I(r=np.ones(2, np.float32)),
        "output": nir.Output(output_type=np.array([2])),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(names)))


def test_reduce_portable_folds_scale_and_drops_output_integrator() -> None:
    graph = _portable_chain()
    reduced = reduce_portable(graph)
    assert [type(node).__name__ for node in reduced.nodes.values()] == [
        "Input", "Affine", "IF", "Affine", "Output",
    ]  # fmt: skip
    assert ("if1", "fc2") in reduced.edges and ("fc2", "output") in reduced.edges
    np.testing.assert_array_equal(reduced.nodes["fc2"].weight, graph.nodes["fc2"].weight * 0.75)
    x = torch.randn(6, 5, 3).expand(6, 5, 3)
    # 0.75 * w is exact in float32 here only up to rounding: compare closely, not bitwise.
    torch.testing.assert_close(Executor(reduced)(x).cumsum(0), Executor(graph)(x))


def test_reduce_portable_threshold_up_is_one_ulp() -> None:
    graph = _portable_chain()
    raised = reduce_portable(graph, threshold_up=True).nodes["if1"].v_threshold
    original = graph.nodes["if1"].v_threshold
    assert np.all(raised > original)
    np.testing.assert_array_equal(raised, np.nextafter(original, np.float32(np.inf)))


def test_classify_error_names_the_node_type_and_nir_version() -> None:
    types = {"integrator": "I", "_2_1": "Scale"}
    versions = "sinabs 3.1.3 (nir 1.0.4, nirtorch 2.0.2)"
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
        Row("ours", "faithful", True, 1.0, 0.0),
        Row("lib", "portable", False, reason="a | b"),
        Row("lib", "portable-reduced", True, 0.5, 6.0412345, "starts at v_reset"),
    ]
    lines = markdown_table(rows).splitlines()
    assert (
        lines[0].startswith("| importer | profile | runs? |")
        and lines[1] == "|---|---|---|---|---|---|"
    )
    assert lines[2] == "| ours | faithful | yes | 100% | 0 | - |"
    assert lines[3] == "| lib | portable | no | - | - | a \\| b |"
    assert lines[4] == "| lib | portable-reduced | yes | 50% | 6.04 | starts at v_reset |"
