"""Run NIR graphs with nirtorch 2.6's interpreter (``nir_to_torch``) using our node map.

The map reuses the executor's primitives, with conv weights in its memory layout
(:mod:`neurocuda.snn.layout`), so a comparison with :class:`~neurocuda.nir.Executor` tests
nirtorch's wiring (edge sums, recurrent edges, nested graphs), not different arithmetic.
nirtorch steps the whole graph once per time step on ``[B, ...]`` inputs.
"""

from __future__ import annotations

from typing import Any

import nir
import nirtorch
import torch
from torch import nn

from neurocuda.nir.primitives import Stateful, make_op
from neurocuda.nir.schedule import topological_order
from neurocuda.snn.layout import apply_layout


class _Stepper(nn.Module):
    """nirtorch's stateful calling convention, ``forward(x, state) -> (y, state)``."""

    def __init__(self, op: Stateful) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        return self.op.step(x, state)


def nirtorch_node_map(dt: float = 1.0, dtype: torch.dtype = torch.float32) -> dict[type, Any]:
    """A ``nir_to_torch`` node map covering every primitive the executor runs."""

    def build(node: nir.NIRNode) -> nn.Module:
        op = make_op(type(node).__name__, node, dt, dtype)
        apply_layout(op)
        return _Stepper(op) if op.stateful else op

    kinds = [
        nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.AvgPool2d,
        nir.SumPool2d, nir.Flatten, nir.Scale, nir.Threshold, nir.I, nir.IF, nir.LI, nir.LIF,
        nir.CubaLI, nir.CubaLIF, nir.Delay,
    ]  # fmt: skip
    return dict.fromkeys(kinds, build)


def _in_topological_order(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The same graph with nodes listed in Kahn's order, nested graphs included.

    nirtorch 2.6 fails on a nested graph that it meets before the nodes feeding it (it wires the
    subgraph twice); files list nodes alphabetically, so we hand it a topological order.
    """
    nodes = {
        name: _in_topological_order(graph.nodes[name])
        if isinstance(graph.nodes[name], nir.NIRGraph)
        else graph.nodes[name]
        for name in topological_order(graph)
    }
    return nir.NIRGraph(
        nodes=nodes, edges=list(graph.edges), metadata=graph.metadata, type_check=False
    )


def run_with_nirtorch(graph: nir.NIRGraph, x: torch.Tensor, dt: float = 1.0) -> torch.Tensor:
    """Run ``graph`` on ``x`` ``[T, B, ...]`` in nirtorch's interpreter; returns ``[T, B, ...]``."""
    ordered = _in_topological_order(graph)
    module = nirtorch.nir_to_torch(ordered, nirtorch_node_map(dt, x.dtype), device=x.device)
    state = None
    outputs = []
    for step in x:
        out, state = module(step, state)
        outputs.append(out)
    return torch.stack(outputs)
