"""Compile a NIR graph (docs/semantics.md structure) into neuron populations and folded projections.

The result is still float; :mod:`neurocuda.deploy.loihi2.quantize` turns it into integers. Folding
rules (each exact in real arithmetic):

* ``Scale`` before a weight layer multiplies its input channels (this is how the neuron's output
  ``Scale(theta)`` reaches the next layer's weights, keeping spikes binary); after it, its rows.
* ``AvgPool2d``/``SumPool2d`` (kernel == stride, no padding) before a weight layer join its
  kernel: ``conv(pool_p(x))`` is a conv with kernel ``k*p``, stride ``s*p``, padding ``pad*p`` and
  weights ``w[i//p, j//p] / p**2``; before an ``Affine`` the weights are upsampled the same way.
* ``Flatten`` only reinterprets shapes.
* Several edges into one node (residual adds) give one projection per path; biases are added once
  per distinct (node, downstream path).

Neurons: ``I(r=1) -> Threshold`` with a recurrent ``Scale(-theta)`` back into the ``I`` is an IF
neuron with reset by subtraction; ``IF(r=1, v_threshold, v_reset)`` one with reset to ``v_reset``;
an ``I(r=1)`` feeding ``Output`` the integrating readout. Anything else is rejected by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import nir
import numpy as np
import torch
import torch.nn.functional as F

PopulationKind = Literal["subtract", "zero", "readout"]
_LINEAR = (nir.Scale, nir.Conv2d, nir.Affine, nir.Linear, nir.AvgPool2d, nir.SumPool2d, nir.Flatten)


class GraphCompileError(ValueError):
    """The NIR graph holds something the Loihi 2 compiler cannot map; the message says what."""


@dataclass
class FloatPopulation:
    """Neurons in absolute-membrane form: start at ``v_init``, fire when ``v > theta``.

    ``subtract``: ``v -= theta`` after a spike; ``zero``: ``v = 0`` after a spike (Lava's LIF);
    ``readout``: integrates, never fires. Tensors have the population's ``shape``.
    """

    name: str
    kind: PopulationKind
    shape: tuple[int, ...]
    theta: torch.Tensor
    v_init: torch.Tensor
    bias: torch.Tensor
    spike_tap: tuple[str, str] = ("", "output")
    """Where the float executor shows this population's spikes: (node, ``output`` | ``input``)."""


@dataclass
class FloatProjection:
    """A folded synapse layer: dense weight ``[N_out, N_in]`` or conv ``[Co, Ci, kH, kW]``."""

    source: str
    target: str
    kind: Literal["dense", "conv"]
    weight: torch.Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    label: str = ""


@dataclass
class FloatNetwork:
    """Input port shapes, populations in topological order, projections, readout name."""

    inputs: dict[str, tuple[int, ...]]
    populations: list[FloatPopulation]
    projections: list[FloatProjection]
    output: str
    macs: dict[str, int] = field(default_factory=dict)
    """Multiply-accumulates per image of each weight node, as the dense ANN computes them."""


def _pair(value) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return (arr[0], arr[0]) if len(arr) == 1 else (arr[0], arr[1])


def _tensor(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=torch.float64)


def inline_subgraphs(graph: nir.NIRGraph) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """Flatten nested ``NIRGraph`` nodes; their Input/Output nodes become pass-through nodes."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, str] = {}
    exit_: dict[str, str] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = inline_subgraphs(node)
            for sub_name, sub in sub_nodes.items():
                nodes[f"{name}.{sub_name}"] = sub
            edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges]
            inputs = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outputs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(inputs) == 1:
                entry[name] = f"{name}.{inputs[0]}"
            if len(outputs) == 1:
                exit_[name] = f"{name}.{outputs[0]}"
        else:
            nodes[name] = node
    for src, dst in graph.edges:
        edges.append((exit_.get(src, src), entry.get(dst, dst)))
    return nodes, edges


class _Graph:
    """Adjacency with the top-level Input/Output distinguished from inlined pass-throughs."""

    def __init__(self, graph: nir.NIRGraph) -> None:
        self.nodes, self.edges = inline_subgraphs(graph)
        for src, dst in self.edges:
            for end in (src, dst):
                if end not in self.nodes:
                    raise GraphCompileError(f"Edge ({src!r}, {dst!r}) names unknown node {end!r}.")
        self.inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
        self.outputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise GraphCompileError(
                f"Expected one Input and one Output node, got {self.inputs} and {self.outputs}."
            )

    def preds(self, name: str) -> list[str]:
        return [s for s, d in self.edges if d == name]

    def succs(self, name: str) -> list[str]:
        return [d for s, d in self.edges if s == name]

    def passthrough(self, name: str) -> bool:
        node = self.nodes[name]
        return isinstance(node, nir.Input | nir.Output) and name not in (self.inputs + self.outputs)


def _input_shape(node: nir.Input) -> tuple[int, ...]:
    shape = next(iter(node.input_type.values()))
    return tuple(int(s) for s in np.asarray(shape).tolist())


def _check_r(node: nir.NIRNode, name: str) -> None:
    if not np.allclose(np.asarray(node.r), 1.0):
        raise GraphCompileError(
            f"{name}: integrator gain r must be 1 (dt=1 convention), got {node.r}."
        )


class _Compiler:
    def __init__(self, graph: nir.NIRGraph) -> None:
        self.g = _Graph(graph)
        self.sources: dict[str, str] = {}  # spike-emitting node -> population name
        self.reset_edges: set[str] = set()  # recurrent Scale(-theta) nodes
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run(self) -> FloatNetwork:
        input_name = self.g.inputs[0]
        self.sources[input_name] = input_name
        pops = self._find_populations()
        self._infer_shapes(input_name)
        populations, projections = [], []
        for pop_node, out_node, kind in pops:
            shape = self.shapes[pop_node]
            pop, projs = self._population(pop_node, out_node, kind, shape)
            populations.append(pop)
            projections += projs
        order = self._topological([p.name for p in populations], projections, input_name)
        populations.sort(key=lambda p: order.index(p.name))
        readouts = [p.name for p in populations if p.kind == "readout"]
        if len(readouts) != 1:
            raise GraphCompileError(f"Expected exactly one I -> Output readout, found {readouts}.")
        return FloatNetwork(
            inputs={input_name: self.shapes[input_name]},
            populations=populations,
            projections=projections,
            output=readouts[0],
            macs=self._macs(),
        )

    def _macs(self) -> dict[str, int]:
        macs = {}
        for name, node in self.g.nodes.items():
            if isinstance(node, nir.Conv2d):
                out = self.shapes[name]
                per_output = int(np.prod(np.asarray(node.weight).shape[1:]))
                macs[name] = int(np.prod(out)) * per_output
            elif isinstance(node, nir.Affine | nir.Linear):
                macs[name] = int(np.prod(np.asarray(node.weight).shape))
        return macs

    def _find_populations(self) -> list[tuple[str, str, PopulationKind]]:
        pops = []
        for name, node in self.g.nodes.items():
            if isinstance(node, nir.I):
                _check_r(node, name)
                thresholds = [
                    s for s in self.g.succs(name) if isinstance(self.g.nodes[s], nir.Threshold)
                ]
                if thresholds:
                    out = thresholds[0]
                    resets = [
                        s
                        for s in self.g.succs(out)
                        if isinstance(self.g.nodes[s], nir.Scale) and name in self.g.succs(s)
                    ]
                    if len(resets) != 1:
                        raise GraphCompileError(
                            f"{name}: I -> Threshold without one recurrent Scale(-theta) back into "
                            "the I; cannot tell the reset (see docs/semantics.md)."
                        )
                    self.reset_edges.add(resets[0])
                    self.sources[out] = name
                    pops.append((name, out, "subtract"))
                else:
                    pops.append((name, name, "readout"))
            elif isinstance(node, nir.IF):
                _check_r(node, name)
                self.sources[name] = name
                pops.append((name, name, "zero"))
            elif not isinstance(node, (*_LINEAR, nir.Threshold, nir.Input, nir.Output)):
                raise GraphCompileError(
                    f"Node {name!r} is a {type(node).__name__}, which the Loihi 2 compiler "
                    "does not map (supported: Input, Output, Conv2d, Affine, Linear, Scale, "
                    "AvgPool2d, SumPool2d, Flatten, I, IF, Threshold)."
                )
        return pops

    def _infer_shapes(self, input_name: str) -> None:
        """Propagate a zero sample through the graph to learn every node's output shape."""
        values = {
            input_name: torch.zeros(1, *_input_shape(self.g.nodes[input_name]), dtype=torch.float64)
        }
        pending = [n for n in self.g.nodes if n != input_name]
        while pending:
            progressed = False
            for name in list(pending):
                preds = [p for p in self.g.preds(name) if p not in self.reset_edges]
                if name in self.reset_edges:
                    preds = self.g.preds(name)
                if not all(p in values for p in preds):
                    continue
                x = sum(values[p] for p in preds) if preds else None
                if x is None:
                    raise GraphCompileError(f"Node {name!r} has no input edge.")
                values[name] = _apply(self.g.nodes[name], x, name, bias=False)
                pending.remove(name)
                progressed = True
            if not progressed:
                raise GraphCompileError(f"Graph has a cycle not formed by reset edges: {pending}.")
        self.shapes = {n: tuple(v.shape[1:]) for n, v in values.items()}

    def _paths(self, name: str) -> list[list[str]]:
        """All linear paths from a spike source (or the Input) to ``name`` (inclusive)."""
        if name in self.sources:
            return [[name]]
        node = self.g.nodes[name]
        if not (isinstance(node, _LINEAR) or self.g.passthrough(name)):
            raise GraphCompileError(
                f"{name!r} ({type(node).__name__}) sits between neurons where only linear nodes "
                "can be folded."
            )
        preds = self.g.preds(name)
        if not preds:
            raise GraphCompileError(f"Node {name!r} has no input edge.")
        return [[*path, name] for p in preds for path in self._paths(p)]

    def _population(self, pop_node: str, out_node: str, kind: PopulationKind, shape):
        node = self.g.nodes[pop_node]
        feed = [p for p in self.g.preds(pop_node) if p not in self.reset_edges]
        paths = [path for p in feed for path in self._paths(p)]
        projections = [self._fold(path, pop_node, shape) for path in paths]
        bias = torch.zeros(shape, dtype=torch.float64)
        seen: set[tuple[str, ...]] = set()
        for path in paths:
            for i, step in enumerate(path[1:], start=1):
                suffix = tuple(path[i:])
                n = self.g.nodes[step]
                if (
                    isinstance(n, nir.Affine | nir.Conv2d)
                    and n.bias is not None
                    and suffix not in seen
                ):
                    seen.add(suffix)
                    b = _bias_map(n, self.shapes[step])
                    for later in path[i + 1 :]:
                        b = _apply(self.g.nodes[later], b.unsqueeze(0), later, bias=False)[0]
                    bias += b.reshape(shape)
        if kind == "subtract":
            reset = next(s for s in self.g.succs(out_node) if s in self.reset_edges)
            theta = -_tensor(self.g.nodes[reset].scale)
            fire = _tensor(self.g.nodes[out_node].threshold)
            v_init = theta - fire
        elif kind == "zero":
            fire = _tensor(node.v_threshold)
            v_init = -_tensor(node.v_reset)
            theta = fire + v_init
        else:
            theta = v_init = torch.zeros(())
        pop = FloatPopulation(
            name=pop_node,
            kind=kind,
            shape=shape,
            theta=_broadcast(theta, shape),
            v_init=_broadcast(v_init, shape),
            bias=bias,
            spike_tap=self._spike_tap(out_node, kind) if kind != "readout" else ("", ""),
        )
        return pop, projections

    def _spike_tap(self, out_node: str, kind: PopulationKind) -> tuple[str, str]:
        """A node outside the neuron's own loop whose only input is the spike tensor."""
        consumers = [
            s
            for s in self.g.succs(out_node)
            if s not in self.reset_edges and len(self.g.preds(s)) == 1
        ]
        return (consumers[0], "input") if consumers else (out_node, "output")

    def _fold(self, path: list[str], target: str, target_shape) -> FloatProjection:
        source = self.sources[path[0]]
        src_shape = self.shapes[path[0]]
        ops = path[1:]
        cores = [
            i
            for i, n in enumerate(ops)
            if isinstance(self.g.nodes[n], nir.Conv2d | nir.Affine | nir.Linear)
        ]
        if len(cores) > 1:
            raise GraphCompileError(
                f"Path {path} into {target!r} has two weight layers with no neuron between them."
            )
        label = ops[cores[0]] if cores else "->".join(ops) or path[0]
        if cores:
            core_name = ops[cores[0]]
            proj = _core_projection(self.g.nodes[core_name], core_name, self.shapes)
            before, after = ops[: cores[0]], ops[cores[0] + 1 :]
        else:
            proj = _identity_projection(src_shape)
            before, after = ops, []
        for name in reversed(before):
            proj = _fold_before(proj, self.g.nodes[name], name, self.shapes, self.g.preds(name))
        for name in after:
            proj = _fold_after(proj, self.g.nodes[name], name)
        if proj.kind == "dense" and proj.weight.shape[1] != int(np.prod(src_shape)):
            raise GraphCompileError(
                f"{label}: folded weight does not match source shape {src_shape}."
            )
        proj.source, proj.target, proj.label = source, target, label
        return proj

    def _topological(self, names, projections, input_name) -> list[str]:
        order, done = [], {input_name}
        while len(order) < len(names):
            ready = [
                n
                for n in names
                if n not in done and all(p.source in done for p in projections if p.target == n)
            ]
            if not ready:
                raise GraphCompileError("Populations form a cycle; only feed-forward graphs map.")
            for n in ready:
                order.append(n)
                done.add(n)
        return order


def _broadcast(value: torch.Tensor, shape) -> torch.Tensor:
    value = value.reshape(-1)
    if value.numel() == 1:
        return value.reshape(()).expand(shape).clone()
    channels = shape[0]
    if value.numel() != channels and value.numel() != int(np.prod(shape)):
        raise GraphCompileError(f"Parameter of {value.numel()} values does not fit shape {shape}.")
    view = (channels,) + (1,) * (len(shape) - 1) if value.numel() == channels else shape
    return value.reshape(view).expand(shape).clone()


def _bias_map(node, out_shape) -> torch.Tensor:
    b = _tensor(node.bias).reshape(-1)
    if isinstance(node, nir.Conv2d):
        return b.reshape(-1, 1, 1).expand(out_shape).clone()
    return b.reshape(out_shape)


def _conv_padding(node: nir.Conv2d) -> tuple[int, int]:
    if isinstance(node.padding, str):
        if node.padding == "valid":
            return (0, 0)
        k = np.asarray(node.weight).shape[-2:]
        return (int(k[0]) // 2, int(k[1]) // 2)
    return _pair(node.padding)


def _apply(node, x: torch.Tensor, name: str, bias: bool) -> torch.Tensor:
    """Run one node on ``x`` (``[B, ...]``) in float64 (shape inference and bias propagation)."""
    if isinstance(node, nir.Conv2d):
        w = _tensor(node.weight)
        b = _tensor(node.bias) if bias and node.bias is not None else None
        return F.conv2d(
            x, w, b, _pair(node.stride), _conv_padding(node), _pair(node.dilation), int(node.groups)
        )
    if isinstance(node, nir.Affine | nir.Linear):
        y = x.reshape(x.shape[0], -1) @ _tensor(node.weight).T
        return y + _tensor(node.bias) if bias and isinstance(node, nir.Affine) else y
    if isinstance(node, nir.Scale):
        return x * _broadcast(_tensor(node.scale), x.shape[1:])
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        y = F.avg_pool2d(x, k, s, p, count_include_pad=True)
        return y if isinstance(node, nir.AvgPool2d) else y * (k[0] * k[1])
    if isinstance(node, nir.Flatten):
        return x.reshape(x.shape[0], -1)  # shapes only matter up to C-order flattening
    if isinstance(node, nir.I | nir.IF | nir.Threshold | nir.Input | nir.Output):
        return x
    raise GraphCompileError(f"Node {name!r}: unsupported {type(node).__name__}.")


def _core_projection(node, name: str, shapes) -> FloatProjection:
    w = _tensor(node.weight)
    if isinstance(node, nir.Conv2d):
        return FloatProjection(
            "",
            "",
            "conv",
            w,
            _pair(node.stride),
            _conv_padding(node),
            _pair(node.dilation),
            int(node.groups),
        )
    return FloatProjection("", "", "dense", w)


def _identity_projection(shape) -> FloatProjection:
    if len(shape) == 3:
        w = torch.ones(shape[0], 1, 1, 1, dtype=torch.float64)
        return FloatProjection("", "", "conv", w, groups=shape[0])
    n = int(np.prod(shape))
    return FloatProjection("", "", "dense", torch.eye(n, dtype=torch.float64))


def _fold_before(proj: FloatProjection, node, name: str, shapes, preds) -> FloatProjection:
    """Fold ``node`` (applied before ``proj``) into ``proj``."""
    in_shape = shapes[preds[0]]
    if isinstance(node, nir.Scale):
        scale = _broadcast(_tensor(node.scale), in_shape)
        if proj.kind == "conv":
            per_channel = scale.reshape(in_shape[0], -1)[:, 0]
            if not torch.equal(scale, _broadcast(per_channel, in_shape)):
                raise GraphCompileError(
                    f"{name}: a per-pixel Scale before a conv cannot be folded."
                )
            if proj.groups == 1:
                proj.weight = proj.weight * per_channel.reshape(1, -1, 1, 1)
            else:
                proj.weight = proj.weight * _grouped(per_channel, proj)
        else:
            proj.weight = proj.weight * scale.reshape(1, -1)
        return proj
    if isinstance(node, nir.Flatten):
        return proj
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        if k != s or p != (0, 0):
            raise GraphCompileError(
                f"{name}: only pooling with kernel == stride and no padding folds."
            )
        if in_shape[1] % k[0] or in_shape[2] % k[1]:
            raise GraphCompileError(f"{name}: input {in_shape} is not divisible by the pool {k}.")
        norm = 1.0 / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else 1.0
        if proj.kind == "conv":
            if proj.dilation != (1, 1):
                raise GraphCompileError(f"{name}: pooling before a dilated conv does not fold.")
            w = proj.weight.repeat_interleave(k[0], 2).repeat_interleave(k[1], 3) * norm
            proj.weight = w
            proj.stride = (proj.stride[0] * k[0], proj.stride[1] * k[1])
            proj.padding = (proj.padding[0] * k[0], proj.padding[1] * k[1])
            return proj
        c, h, w_ = in_shape
        pooled = proj.weight.reshape(proj.weight.shape[0], c, h // k[0], w_ // k[1])
        up = pooled.repeat_interleave(k[0], 2).repeat_interleave(k[1], 3) * norm
        proj.weight = up.reshape(proj.weight.shape[0], -1)
        return proj
    if isinstance(node, nir.Input | nir.Output):
        return proj
    raise GraphCompileError(
        f"{name}: {type(node).__name__} cannot be folded before a weight layer."
    )


def _grouped(per_channel: torch.Tensor, proj: FloatProjection) -> torch.Tensor:
    """Per-input-channel scale laid out on a grouped kernel ``[Co, Ci/g, kH, kW]``."""
    co, ci_g = proj.weight.shape[:2]
    per_group_out = co // proj.groups
    idx = torch.arange(co).div(per_group_out, rounding_mode="floor").unsqueeze(1) * ci_g
    idx = idx + torch.arange(ci_g).unsqueeze(0)
    return per_channel[idx].reshape(co, ci_g, 1, 1)


def _fold_after(proj: FloatProjection, node, name: str) -> FloatProjection:
    """Fold ``node`` (applied after ``proj``) into ``proj``."""
    if isinstance(node, nir.Scale):
        scale = _tensor(node.scale).reshape(-1)
        rows = proj.weight.shape[0]
        if scale.numel() not in (1, rows):
            raise GraphCompileError(
                f"{name}: a per-pixel Scale after a weight layer cannot be folded."
            )
        proj.weight = proj.weight * scale.reshape(-1, *([1] * (proj.weight.dim() - 1)))
        return proj
    if isinstance(node, nir.Flatten | nir.Input | nir.Output):
        return proj
    raise GraphCompileError(
        f"{name}: {type(node).__name__} after a weight layer and before the neuron does not fold; "
        "place pooling after the activation."
    )


def compile_graph(graph: nir.NIRGraph) -> FloatNetwork:
    """Compile ``graph`` into populations and folded float projections (see module docstring)."""
    return _Compiler(graph).run()
