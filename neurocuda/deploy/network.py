"""What every deploy target needs from a NIR graph: neuron populations and folded projections.

:func:`compile_graph` reads a graph with the structure of docs/semantics.md into a
:class:`FloatNetwork`: populations in topological order (shapes and neuron parameters), the synapse
layers between them (what each spike reaches: fan-in, fan-out, synaptic operations) and the
multiply-accumulates of the dense ANN. It is float; the loihi2 target quantizes it
(:mod:`neurocuda.deploy.loihi2.quantize`). Flattening nested graphs, recurrent edges and the order
are :mod:`neurocuda.nir.schedule`'s, shapes come from :mod:`neurocuda.nir.primitives`' ops.

Folding rules (each exact in real arithmetic):

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

from neurocuda.metrics.fanout import fan_out_map
from neurocuda.nir.primitives import Stateful, make_op
from neurocuda.nir.schedule import Schedule, build_schedule
from neurocuda.snn.neurons import ResetMode

PopulationKind = ResetMode | Literal["readout"]
_LINEAR = (nir.Scale, nir.Conv2d, nir.Affine, nir.Linear, nir.AvgPool2d, nir.SumPool2d, nir.Flatten)


class GraphCompileError(ValueError):
    """The NIR graph holds something the deploy targets cannot map; the message says what."""


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
    label: str = ""
    """The layer as the model names it (``layers.0.act1``; the exporter's node metadata), for
    reports; the node name where the file has none."""


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

    def incoming(self, name: str) -> list[FloatProjection]:
        """Projections into population ``name``, in declaration order."""
        return [p for p in self.projections if p.target == name]

    def fan_out(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """Synapses leaving each neuron of population ``name`` (its shape, int64), all targets."""
        shape = next(p.shape for p in self.populations if p.name == name)
        fan = torch.zeros(shape, dtype=torch.int64, device=device)
        for p in self.projections:
            if p.source == name:
                fan += fan_out_map(
                    p.kind, tuple(p.weight.shape), shape, p.stride, p.padding, p.dilation,
                    p.groups, device,
                )  # fmt: skip
        return fan


def _pair(value) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return (arr[0], arr[0]) if len(arr) == 1 else (arr[0], arr[1])


def _tensor(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=torch.float64)


def _input_shape(node: nir.Input) -> tuple[int, ...]:
    shape = next(iter(node.input_type.values()))
    return tuple(int(s) for s in np.asarray(shape).tolist())


def _check_r(node: nir.NIRNode, name: str) -> None:
    if not np.allclose(np.asarray(node.r), 1.0):
        raise GraphCompileError(
            f"{name}: integrator gain r must be 1 (dt=1 convention), got {node.r}."
        )


def _schedule(graph: nir.NIRGraph) -> Schedule:
    try:
        return build_schedule(graph)
    except ValueError as err:
        raise GraphCompileError(str(err)) from err


def _label(graph: nir.NIRGraph, name: str) -> str:
    """``metadata["layer"]`` of the top-level node holding flattened ``name``, else ``name``."""
    node = graph.nodes.get(name.split(".", 1)[0])
    layer = (getattr(node, "metadata", None) or {}).get("layer")
    return str(layer) if layer else name


class _Compiler:
    def __init__(self, graph: nir.NIRGraph) -> None:
        self.graph = graph
        self.schedule = _schedule(graph)
        flat = self.schedule.graph
        self.nodes = flat.nodes
        self._preds: dict[str, list[str]] = {n: [] for n in self.nodes}
        self._succs: dict[str, list[str]] = {n: [] for n in self.nodes}
        for src, dst in flat.edges:
            self._preds[dst].append(src)
            self._succs[src].append(dst)
        self.input = flat.input
        self.endpoints = (flat.input, flat.output)
        self.sources: dict[str, str] = {}  # spike-emitting node -> population name
        self.reset_edges: set[str] = set()  # recurrent Scale(-theta) nodes
        self.shapes: dict[str, tuple[int, ...]] = {}

    def preds(self, name: str) -> list[str]:
        return self._preds[name]

    def succs(self, name: str) -> list[str]:
        return self._succs[name]

    def passthrough(self, name: str) -> bool:
        """An Input/Output node of an inlined subgraph."""
        node = self.nodes[name]
        return isinstance(node, nir.Input | nir.Output) and name not in self.endpoints

    def run(self) -> FloatNetwork:
        self.sources[self.input] = self.input
        pops = self._find_populations()
        self._infer_shapes()
        populations, projections = [], []
        for pop_node, out_node, kind in pops:
            pop, projs = self._population(pop_node, out_node, kind, self.shapes[pop_node])
            populations.append(pop)
            projections += projs
        populations = self._ordered(populations, projections)
        readouts = [p.name for p in populations if p.kind == "readout"]
        if len(readouts) != 1:
            raise GraphCompileError(f"Expected exactly one I -> Output readout, found {readouts}.")
        return FloatNetwork(
            inputs={self.input: self.shapes[self.input]},
            populations=populations,
            projections=projections,
            output=readouts[0],
            macs=self._macs(),
        )

    def _macs(self) -> dict[str, int]:
        macs = {}
        for name, node in self.nodes.items():
            if isinstance(node, nir.Conv2d):
                out = self.shapes[name]
                per_output = int(np.prod(np.asarray(node.weight).shape[1:]))
                macs[name] = int(np.prod(out)) * per_output
            elif isinstance(node, nir.Affine | nir.Linear):
                macs[name] = int(np.prod(np.asarray(node.weight).shape))
        return macs

    def _find_populations(self) -> list[tuple[str, str, PopulationKind]]:
        pops = []
        for name, node in self.nodes.items():
            if isinstance(node, nir.I):
                _check_r(node, name)
                thresholds = [
                    s for s in self.succs(name) if isinstance(self.nodes[s], nir.Threshold)
                ]
                if thresholds:
                    out = thresholds[0]
                    resets = [
                        s
                        for s in self.succs(out)
                        if isinstance(self.nodes[s], nir.Scale) and name in self.succs(s)
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
                    f"Node {name!r} is a {type(node).__name__}, which the deploy targets "
                    "do not map (supported: Input, Output, Conv2d, Affine, Linear, Scale, "
                    "AvgPool2d, SumPool2d, Flatten, I, IF, Threshold)."
                )
        return pops

    def _infer_shapes(self) -> None:
        """Run one zero sample through the executor's ops, in the schedule's order."""
        first = torch.zeros(1, *_input_shape(self.nodes[self.input]), dtype=torch.float64)
        values = {self.input: first}
        for stage in self.schedule.stages:
            for name in stage.members:
                if name == self.input:
                    continue
                feed = [values[s] for s, recurrent in self.schedule.inputs[name] if not recurrent]
                if not feed:
                    raise GraphCompileError(f"Node {name!r} has no input edge.")
                op = make_op(name, self.nodes[name], 1.0, torch.float64)
                x = sum(feed)
                # neurons, scales and thresholds keep the shape (and their values do not matter)
                values[name] = x if isinstance(op, Stateful) or op.elementwise else op(x)
        self.shapes = {n: tuple(v.shape[1:]) for n, v in values.items()}

    def _ordered(
        self, populations: list[FloatPopulation], projections: list[FloatProjection]
    ) -> list[FloatPopulation]:
        """Populations in the schedule's order; every one after the populations it reads."""
        rank = {n: i for i, n in enumerate(m for s in self.schedule.stages for m in s.members)}
        ordered = sorted(populations, key=lambda p: rank[p.name])
        done = {self.input}
        for pop in ordered:
            if any(p.source not in done for p in projections if p.target == pop.name):
                raise GraphCompileError("Populations form a cycle; only feed-forward graphs map.")
            done.add(pop.name)
        return ordered

    def _paths(self, name: str) -> list[list[str]]:
        """All linear paths from a spike source (or the Input) to ``name`` (inclusive)."""
        if name in self.sources:
            return [[name]]
        node = self.nodes[name]
        if not (isinstance(node, _LINEAR) or self.passthrough(name)):
            raise GraphCompileError(
                f"{name!r} ({type(node).__name__}) sits between neurons where only linear nodes "
                "can be folded."
            )
        preds = self.preds(name)
        if not preds:
            raise GraphCompileError(f"Node {name!r} has no input edge.")
        return [[*path, name] for p in preds for path in self._paths(p)]

    def _population(self, pop_node: str, out_node: str, kind: PopulationKind, shape):
        node = self.nodes[pop_node]
        feed = [p for p in self.preds(pop_node) if p not in self.reset_edges]
        paths = [path for p in feed for path in self._paths(p)]
        projections = [self._fold(path, pop_node) for path in paths]
        bias = torch.zeros(shape, dtype=torch.float64)
        seen: set[tuple[str, ...]] = set()
        for path in paths:
            for i, step in enumerate(path[1:], start=1):
                suffix = tuple(path[i:])
                n = self.nodes[step]
                if (
                    isinstance(n, nir.Affine | nir.Conv2d)
                    and n.bias is not None
                    and suffix not in seen
                ):
                    seen.add(suffix)
                    b = _bias_map(n, self.shapes[step])
                    for later in path[i + 1 :]:
                        b = _after_weights(self.nodes[later], b)
                    bias += b.reshape(shape)
        if kind == "subtract":
            reset = next(s for s in self.succs(out_node) if s in self.reset_edges)
            theta = -_tensor(self.nodes[reset].scale)
            fire = _tensor(self.nodes[out_node].threshold)
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
            spike_tap=self._spike_tap(out_node) if kind != "readout" else ("", ""),
            label=_label(self.graph, pop_node),
        )
        return pop, projections

    def _spike_tap(self, out_node: str) -> tuple[str, str]:
        """A node outside the neuron's own loop whose only input is the spike tensor."""
        consumers = [
            s for s in self.succs(out_node) if s not in self.reset_edges and len(self.preds(s)) == 1
        ]
        return (consumers[0], "input") if consumers else (out_node, "output")

    def _fold(self, path: list[str], target: str) -> FloatProjection:
        source = self.sources[path[0]]
        src_shape = self.shapes[path[0]]
        ops = path[1:]
        cores = [
            i
            for i, n in enumerate(ops)
            if isinstance(self.nodes[n], nir.Conv2d | nir.Affine | nir.Linear)
        ]
        if len(cores) > 1:
            raise GraphCompileError(
                f"Path {path} into {target!r} has two weight layers with no neuron between them."
            )
        label = ops[cores[0]] if cores else "->".join(ops) or path[0]
        if cores:
            proj = _core_projection(self.nodes[ops[cores[0]]])
            before, after = ops[: cores[0]], ops[cores[0] + 1 :]
        else:
            proj = _identity_projection(src_shape)
            before, after = ops, []
        for name in reversed(before):
            in_shape = self.shapes[self.preds(name)[0]]
            proj = _fold_before(proj, self.nodes[name], name, in_shape)
        for name in after:
            proj = _fold_after(proj, self.nodes[name], name)
        if proj.kind == "dense" and proj.weight.shape[1] != int(np.prod(src_shape)):
            raise GraphCompileError(
                f"{label}: folded weight does not match source shape {src_shape}."
            )
        proj.source, proj.target, proj.label = source, target, label
        return proj


def _broadcast(value: torch.Tensor, shape) -> torch.Tensor:
    """A parameter given as one value, one per channel or one per neuron, laid out on ``shape``."""
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


def _after_weights(node, bias: torch.Tensor) -> torch.Tensor:
    """A weight layer's bias map carried through a node that :func:`_fold_after` accepts:
    ``Scale`` multiplies it, ``Flatten`` flattens it, pass-through nodes keep it."""
    if isinstance(node, nir.Scale):
        return bias * _broadcast(_tensor(node.scale), bias.shape)
    return bias.reshape(-1) if isinstance(node, nir.Flatten) else bias


def _conv_padding(node: nir.Conv2d) -> tuple[int, int]:
    """Zeros added on each side; ``"same"`` is ``dilation * (k - 1)`` in all (as torch pads it),
    which the targets' symmetric padding holds only when even."""
    if isinstance(node.padding, str):
        if node.padding == "valid":
            return (0, 0)
        k = np.asarray(node.weight).shape[-2:]
        total = [int(d) * (int(n) - 1) for d, n in zip(_pair(node.dilation), k, strict=True)]
        if any(t % 2 for t in total):
            raise GraphCompileError(
                f"Conv2d padding='same' with kernel {tuple(int(n) for n in k)} and dilation "
                f"{_pair(node.dilation)} pads unevenly ({total} zeros in all), which the deploy "
                "targets cannot map; export with explicit symmetric padding."
            )
        return (total[0] // 2, total[1] // 2)
    return _pair(node.padding)


def _core_projection(node) -> FloatProjection:
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


def _fold_before(proj: FloatProjection, node, name: str, in_shape) -> FloatProjection:
    """Fold ``node`` (applied before ``proj``, on inputs of ``in_shape``) into ``proj``."""
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
