"""Static analysis of a NIR graph: flatten nested graphs, classify edges, order the stages.

Conventions (documented in docs/nir.md):
- Nested ``NIRGraph`` nodes are inlined; their ``Input``/``Output`` nodes stay as pass-through nodes
  named ``<subgraph>.<node>`` so that sums into a subgraph happen at its input, as nested.
- An edge is *recurrent* when it closes a cycle in a depth-first walk from the graph's ``Input``
  that follows outgoing edges in edge-list order; it delivers the previous step's value.
- Stages follow Kahn's topological order of the strongly connected components over the remaining
  (feed-forward) edges; inside a cyclic component, members follow Kahn's order of its own edges.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import nir

from neurocuda.nir.errors import NIRFormatError

STATEFUL_TYPES: tuple[type, ...] = (
    nir.I,
    nir.IF,
    nir.LI,
    nir.LIF,
    nir.CubaLI,
    nir.CubaLIF,
    nir.Delay,
)


@dataclass(frozen=True)
class FlatGraph:
    """A graph with nested graphs inlined; ``input``/``output`` name the top-level endpoints."""

    nodes: dict[str, nir.NIRNode]
    edges: list[tuple[str, str]]
    input: str
    output: str


@dataclass
class Stage:
    """One unit of work: a stateless node, a stateful node scanned over time, or a cyclic loop."""

    kind: str  # "stateless" | "scan" | "loop"
    members: list[str]
    exported: list[str] = field(default_factory=list)  # loop members read outside the loop


@dataclass(frozen=True)
class Schedule:
    """Everything the executor needs: node order, per-node inputs and stages."""

    graph: FlatGraph
    inputs: dict[str, list[tuple[str, bool]]]  # node -> [(source, recurrent)], summation order
    stages: list[Stage]


def _endpoints(graph: nir.NIRGraph, where: str) -> tuple[str, str]:
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRFormatError(
            f"{where} has Input nodes {inputs} and Output nodes {outputs}; the executor runs "
            "graphs with exactly one Input and one Output node (merge or split the graph)."
        )
    return inputs[0], outputs[0]


def _member_prefix(prefix: str, name: str) -> str:
    """Prefix of the members of nested graph ``name``: they are named ``<graph>.<member>``."""
    return f"{prefix}{name}."


def check_flat_names(graph: nir.NIRGraph) -> None:
    """Raise when two nodes get the same name once nested graphs are inlined.

    A top-level node named ``sub.reset`` and member ``reset`` of nested graph ``sub`` would become
    one node of the flat graph: one of them would silently replace the other.
    """
    seen: set[str] = set()
    stack = [(graph, "")]
    while stack:
        level, prefix = stack.pop()
        for name, node in level.nodes.items():
            if isinstance(node, nir.NIRGraph):
                stack.append((node, _member_prefix(prefix, name)))
            elif (flat := prefix + name) in seen:
                raise NIRFormatError(
                    f"Two nodes are both named {flat!r} once nested graphs are inlined (a node "
                    "named with a '.' collides with a nested graph's member); rename one."
                )
            else:
                seen.add(flat)


def flatten_graph(graph: nir.NIRGraph, prefix: str = "") -> FlatGraph:
    """Inline nested graphs; raise on dangling edges or ambiguous endpoints."""
    where = f"subgraph {prefix[:-1]!r}" if prefix else "the graph"
    input_name, output_name = _endpoints(graph, where)
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, str] = {}  # subgraph name -> its qualified input node
    exit_: dict[str, str] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner = flatten_graph(node, _member_prefix(prefix, name))
            nodes.update(inner.nodes)
            edges.extend(inner.edges)
            entry[name], exit_[name] = inner.input, inner.output
        else:
            nodes[prefix + name] = node
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise NIRFormatError(
                    f"Edge ({src!r}, {dst!r}) in {where} refers to node {end!r}, which does not "
                    f"exist; nodes are {sorted(graph.nodes)}. Fix or remove the edge."
                )
        edges.append((exit_.get(src, prefix + src), entry.get(dst, prefix + dst)))
    return FlatGraph(nodes, edges, prefix + input_name, prefix + output_name)


def _recurrent_edges(g: FlatGraph) -> set[int]:
    """Indices of edges that close a cycle in an ordered depth-first walk from the input."""
    out: dict[str, list[int]] = {n: [] for n in g.nodes}
    for i, (src, _) in enumerate(g.edges):
        out[src].append(i)
    state = dict.fromkeys(g.nodes, 0)  # 0 new, 1 on stack, 2 done
    recurrent: set[int] = set()
    state[g.input] = 1
    stack = [(g.input, iter(out[g.input]))]
    while stack:
        node, it = stack[-1]
        edge = next(it, None)
        if edge is None:
            state[node] = 2
            stack.pop()
            continue
        dst = g.edges[edge][1]
        if state[dst] == 1:
            recurrent.add(edge)
        elif state[dst] == 0:
            state[dst] = 1
            stack.append((dst, iter(out[dst])))
    unreachable = [n for n, s in state.items() if s == 0]
    if unreachable:
        raise NIRFormatError(
            f"Nodes {unreachable} cannot be reached from the input node {g.input!r}; every node "
            "must receive data from the Input (connect or remove them)."
        )
    return recurrent


def _components(g: FlatGraph) -> list[list[str]]:
    """Strongly connected components (Kosaraju, iterative)."""
    succ: dict[str, list[str]] = {n: [] for n in g.nodes}
    pred: dict[str, list[str]] = {n: [] for n in g.nodes}
    for src, dst in g.edges:
        succ[src].append(dst)
        pred[dst].append(src)
    order: list[str] = []
    seen: set[str] = set()
    for root in g.nodes:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next((n for n in it if n not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(succ[nxt])))
    assigned: set[str] = set()
    components = []
    for root in reversed(order):
        if root in assigned:
            continue
        comp, todo = [], [root]
        assigned.add(root)
        while todo:
            node = todo.pop()
            comp.append(node)
            for p in pred[node]:
                if p not in assigned:
                    assigned.add(p)
                    todo.append(p)
        components.append(comp)
    return components


def _kahn(items: list[str], edges: list[tuple[str, str]], rank: dict[str, int]) -> list[str]:
    """Kahn's algorithm; among ready items the one first in ``rank`` goes first."""
    indegree = dict.fromkeys(items, 0)
    succ: dict[str, list[str]] = {i: [] for i in items}
    for src, dst in edges:
        succ[src].append(dst)
        indegree[dst] += 1
    ready = [(rank[i], i) for i in items if indegree[i] == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        _, item = heapq.heappop(ready)
        ordered.append(item)
        for nxt in succ[item]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (rank[nxt], nxt))
    return ordered


def build_schedule(graph: nir.NIRGraph) -> Schedule:
    """Flatten ``graph`` and order its work; raise on cycles that carry no state."""
    check_flat_names(graph)
    g = flatten_graph(graph)
    recurrent = _recurrent_edges(g)
    inputs: dict[str, list[tuple[str, bool]]] = {n: [] for n in g.nodes}
    for i, (src, dst) in enumerate(g.edges):
        if i not in recurrent:
            inputs[dst].append((src, False))
    for i, (src, dst) in enumerate(g.edges):
        if i in recurrent:
            inputs[dst].append((src, True))
    if inputs[g.input]:
        raise NIRFormatError(f"The Input node {g.input!r} has incoming edges; remove them.")

    rank = {n: i for i, n in enumerate(g.nodes)}
    comp_of: dict[str, str] = {}
    components = {}
    for comp in _components(g):
        key = min(comp, key=rank.__getitem__)
        components[key] = comp
        comp_of.update(dict.fromkeys(comp, key))
    rank_comp = {k: rank[k] for k in components}
    cross = [(comp_of[s], comp_of[d]) for s, d in g.edges if comp_of[s] != comp_of[d]]
    stages = []
    for key in _kahn(list(components), cross, rank_comp):
        comp = components[key]
        cyclic = len(comp) > 1 or (comp[0], comp[0]) in g.edges
        if not cyclic:
            kind = "scan" if isinstance(g.nodes[comp[0]], STATEFUL_TYPES) else "stateless"
            stages.append(Stage(kind, comp))
            continue
        if not any(isinstance(g.nodes[n], STATEFUL_TYPES) for n in comp):
            raise NIRFormatError(
                f"Nodes {sorted(comp)} form a cycle without a stateful node (I, IF, LI, LIF, "
                "CubaLI, CubaLIF, Delay); such a loop has no defined value. Add a stateful node to "
                "the loop or remove the cycle."
            )
        members = set(comp)
        inner = [
            (s, d)
            for i, (s, d) in enumerate(g.edges)
            if s in members and d in members and i not in recurrent
        ]
        ordered = _kahn(sorted(members, key=rank.__getitem__), inner, rank)
        exported = sorted(
            {s for s, d in g.edges if s in members and d not in members}, key=rank.__getitem__
        )
        stages.append(Stage("loop", ordered, exported))
    return Schedule(g, inputs, stages)


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Node names of one graph level (nested graphs as single nodes) in Kahn's order."""
    input_name, output_name = _endpoints(graph, "the graph")
    level = FlatGraph(dict(graph.nodes), list(graph.edges), input_name, output_name)
    recurrent = _recurrent_edges(level)
    forward = [e for i, e in enumerate(level.edges) if i not in recurrent]
    return _kahn(list(level.nodes), forward, {n: i for i, n in enumerate(level.nodes)})
