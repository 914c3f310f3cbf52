"""Export a converted :class:`~neurocuda.snn.SpikingModel` to a self-contained ``nir.NIRGraph``.

Tracing and wiring are nirtorch 2.6's ``torch_to_nir`` with our module map. Written around it, and
why:

- Shapes: nirtorch hands a mapper only the module, but NIR neurons, scales and ``Flatten`` need the
  per-sample shape, so one forward pass with hooks records every module's input shape first.
- ``nn.Identity`` (left where BatchNorm was folded, and in residual shortcuts) has no NIR primitive;
  it is mapped to a marker and spliced out afterwards (its sources connect to its destinations, at
  its place in the edge list), because nirtorch cannot drop a module.
- Unmapped leaf modules make nirtorch fail with a ``KeyError``; they are checked first so the error
  names the module and the fix.

Residual ``Add`` modules are traced through: nirtorch turns ``a + b`` into two edges into the
consumer, in operand order. The soft-reset IF neuron becomes a nested graph (see
:func:`_soft_reset_if`); the semantics are docs/semantics.md.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal, get_args

import nir
import nirtorch
import numpy as np
import torch
from torch import fx, nn

import neurocuda
from neurocuda.nir.io import IF_FORMAT_KEY, LEGACY_IF_FORMAT
from neurocuda.nir.metadata import InputSignature
from neurocuda.nir.portable import (
    LEGACY_IF_PROFILES,
    PORTABLE_PROFILES,
    RESET_OF_PROFILE,
    NeuronMarker,
    PortableProfile,
    make_portable,
)
from neurocuda.nir.support import unsupported_options
from neurocuda.snn import IFNeuron, OutputIntegrator, Scale, SpikingModel

Profile = Literal["faithful", "portable", PortableProfile]
PROFILES: tuple[str, ...] = get_args(Profile)  # nested Literals flatten
Shapes = dict[nn.Module, tuple[int, ...]]


class _Passthrough(nir.NIRNode):
    """Marker for modules that vanish from the graph (``nn.Identity``)."""

    def __init__(self) -> None:
        self.input_type = {"input": None}
        self.output_type = {"output": None}
        self.metadata = {}


def _array(value: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter broadcast to one sample's shape, as NIR wants per-neuron parameters."""
    array = value.detach().cpu().to(torch.float32).numpy()
    return np.ascontiguousarray(np.broadcast_to(array, shape))


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().to(torch.float32).numpy().copy()


def _map_conv(module: nn.Conv1d | nn.Conv2d, shape: tuple[int, ...]) -> nir.NIRNode:
    bias = torch.zeros(module.out_channels) if module.bias is None else module.bias
    kind = nir.Conv1d if isinstance(module, nn.Conv1d) else nir.Conv2d
    spatial = shape[1] if isinstance(module, nn.Conv1d) else tuple(shape[1:])
    padding = module.padding if isinstance(module.padding, str) else np.array(module.padding)
    return kind(
        input_shape=spatial,
        weight=_numpy(module.weight),
        stride=np.array(module.stride),
        padding=padding,
        dilation=np.array(module.dilation),
        groups=module.groups,
        bias=_numpy(bias),
    )


def _map_linear(module: nn.Linear, shape: tuple[int, ...]) -> nir.NIRNode:
    if module.bias is None:
        return nir.Linear(weight=_numpy(module.weight))
    return nir.Affine(weight=_numpy(module.weight), bias=_numpy(module.bias))


def _map_avgpool(module: nn.AvgPool2d, shape: tuple[int, ...]) -> nir.NIRNode:
    padding = nn.modules.utils._pair(module.padding)
    stride = module.stride if module.stride is not None else module.kernel_size
    return nir.AvgPool2d(
        kernel_size=np.array(nn.modules.utils._pair(module.kernel_size)),
        stride=np.array(nn.modules.utils._pair(stride)),
        padding=np.array(padding),
    )


def _map_flatten(module: nn.Flatten, shape: tuple[int, ...]) -> nir.NIRNode:
    shift = lambda d: d - 1 if d > 0 else d  # noqa: E731  NIR dims exclude the batch
    return nir.Flatten(
        input_type={"input": np.array(shape)},
        start_dim=shift(module.start_dim),
        end_dim=shift(module.end_dim),
    )


def _map_scale(module: Scale, shape: tuple[int, ...]) -> nir.NIRNode:
    return nir.Scale(scale=_array(module.scale, shape))


def _soft_reset_if(neuron: IFNeuron, shape: tuple[int, ...]) -> nir.NIRGraph:
    """``input -> I(r=1) -> Threshold(fire_level) -> output``, recurrent ``Scale(-theta)`` into I.

    The executor (and nirtorch) sums the integrator's inputs, the recurrent one holding the previous
    step's ``-theta * s``: ``u_t = u_{t-1} + (x_t + (-theta) * s_{t-1})``, docs/semantics.md.
    """
    nodes = {
        "input": nir.Input(input_type=np.array(shape)),
        "integrator": nir.I(r=np.ones(shape, dtype=np.float32)),
        "threshold": nir.Threshold(threshold=_array(neuron.fire_level, shape)),
        "reset": nir.Scale(scale=_array(-neuron.threshold, shape)),
        "output": nir.Output(output_type=np.array(shape)),
    }
    edges = [
        ("input", "integrator"),
        ("integrator", "threshold"),
        ("threshold", "reset"),
        ("reset", "integrator"),
        ("threshold", "output"),
    ]
    meta = {"neurocuda_module": "IFNeuron", "reset": "subtract"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _map_if(profile: Profile) -> Callable[[IFNeuron, tuple[int, ...]], nir.NIRNode]:
    def mapper(neuron: IFNeuron, shape: tuple[int, ...]) -> nir.NIRNode:
        if profile in PORTABLE_PROFILES:
            if neuron.reset != RESET_OF_PROFILE[profile]:
                raise ValueError(
                    f"profile={profile!r} is for models with reset={RESET_OF_PROFILE[profile]!r}, "
                    f"but this model has reset={neuron.reset!r}; convert with "
                    f"conversion.reset={RESET_OF_PROFILE[profile]} or choose another profile "
                    "(docs/interop.md)."
                )
            return NeuronMarker(_array(neuron.threshold, shape), _array(neuron.v_init, shape))
        if neuron.reset == "zero":  # NIR's IF (nir >= 1.0.6): v = v_reset after a spike
            return nir.IF(
                r=np.ones(shape, dtype=np.float32),
                v_threshold=_array(neuron.fire_level, shape),
                v_reset=_array(-neuron.v_init, shape),
                metadata={"neurocuda_module": "IFNeuron", "reset": "zero"},
            )
        if profile == "portable":
            raise ValueError(
                "profile='portable' writes nir.IF nodes, which reset to a fixed potential, but "
                "this model resets by subtraction; convert with conversion.reset=zero for a "
                "portable file, or export profile='faithful'."
            )
        return _soft_reset_if(neuron, shape)

    return mapper


def _map_output_integrator(module: OutputIntegrator, shape: tuple[int, ...]) -> nir.NIRNode:
    return nir.I(r=np.ones(shape, dtype=np.float32))


def _mappers(profile: Profile) -> dict[type[nn.Module], Callable[[Any, tuple[int, ...]], Any]]:
    return {
        nn.Conv1d: _map_conv,
        nn.Conv2d: _map_conv,
        nn.Linear: _map_linear,
        nn.AvgPool2d: _map_avgpool,
        nn.Flatten: _map_flatten,
        nn.Identity: lambda module, shape: _Passthrough(),
        Scale: _map_scale,
        IFNeuron: _map_if(profile),
        OutputIntegrator: _map_output_integrator,
    }


def _check_modules(network: nn.Module, mappers: dict[type[nn.Module], Any]) -> None:
    """Raise for leaf modules nirtorch would trace but we cannot map, or not faithfully."""
    skip: set[str] = set()
    for name, module in network.named_modules():
        if any(name.startswith(prefix + ".") for prefix in skip):
            continue
        if type(module) in mappers:
            if problem := unsupported_options(module):
                raise ValueError(f"Module {name!r} ({type(module).__name__}): {problem}.")
            skip.add(name)
            continue
        is_torch_leaf = type(module).__module__.startswith("torch.nn") and not isinstance(
            module, nn.Sequential | nn.ModuleList | nn.ModuleDict
        )
        if is_torch_leaf:
            raise ValueError(
                f"Module {name!r} ({type(module).__name__}) has no NIR mapping. Export takes a "
                "converted SpikingModel (neurocuda.conversion.convert folds BatchNorm, replaces "
                "activations by IF neurons and AdaptiveAvgPool2d by AvgPool2d); supported modules: "
                f"{sorted(t.__name__ for t in mappers)}."
            )


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1])


class _MappedLeaves(fx.Tracer):
    """Traces into every module but the mapped ones, down to the operations nirtorch wires."""

    def __init__(self, mapped: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.mapped = mapped

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module) in self.mapped


def _check_operations(network: nn.Module, mappers: dict[type[nn.Module], Any]) -> None:
    """Raise for an operation between modules other than the sum of two tensors (a residual
    addition), which nirtorch would otherwise wire as a plain edge, silently dropping it: e.g.
    ``x + 0.5`` in a custom module's forward became a sum of one input, without the constant."""
    try:
        graph = _MappedLeaves(tuple(mappers)).trace(network)
    except fx.proxy.TraceError:
        return  # torch_to_nir raises it again, with its own message
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "call_module"):
            continue
        is_sum = (
            node.op == "call_function"
            and node.target in (operator.add, torch.add)
            and len(node.args) == 2
            and all(isinstance(arg, fx.Node) for arg in node.args)
            and not node.kwargs
        )
        if not is_sum:
            op = getattr(node.target, "__name__", str(node.target))
            args = ", ".join(str(arg) for arg in node.args)
            stack = list(node.meta.get("nn_module_stack", {}).values())
            where = f" in module {stack[-1][0]!r} ({_type_name(stack[-1][1])})" if stack else ""
            raise ValueError(
                f"The spiking network computes {op}({args}){where}, which has no NIR mapping: "
                "between modules export takes only the sum of two tensors (neurocuda.models."
                "layers.Add). Move the operation into a supported module: "
                f"{sorted(t.__name__ for t in mappers)}."
            )


def _record_shapes(snn: SpikingModel, sample: torch.Tensor) -> Shapes:
    shapes: Shapes = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        shapes.setdefault(module, tuple(args[0].shape[1:]))

    handles = [m.register_forward_pre_hook(hook) for m in snn.network.modules()]
    try:
        with torch.no_grad():
            snn(sample, timesteps=1)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _splice_passthroughs(
    nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]]
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """Remove marker nodes; each edge leaving one is replaced by edges from its sources."""
    for name in [k for k, n in nodes.items() if isinstance(n, _Passthrough)]:
        sources = [s for s, d in edges if d == name]
        edges = [
            new
            for s, d in edges
            if d != name
            for new in ([(src, d) for src in sources] if s == name else [(s, d)])
        ]
        del nodes[name]
    if len(set(edges)) != len(edges):
        raise ValueError(
            "The traced graph feeds one value twice into the same node (e.g. x + x); NIR edges are "
            "unique. Write it as a Scale (2 * x) in the model."
        )
    return nodes, edges


def export(
    snn: SpikingModel,
    sample_input: torch.Tensor,
    profile: Profile = "faithful",
    metadata: dict[str, Any] | None = None,
) -> nir.NIRGraph:
    """Export ``snn`` (traced on ``sample_input``, ``[B, *input_shape]``) as a NIR graph.

    ``profile="faithful"`` represents the soft-reset IF neuron exactly in standard primitives;
    ``"portable"`` requires a hard-reset model (``conversion.reset=zero``) and writes ``nir.IF``
    (exact, NIR's semantics). ``"portable-hard"``, ``"portable-soft"``, ``"spikingjelly"``,
    ``"snntorch"``, ``"norse"`` and ``"sinabs"`` write plain nodes that importers map, with an
    indicator input channel that carries the initial membrane (:mod:`neurocuda.nir.portable`; the
    input signature is in the metadata, :class:`neurocuda.nir.metadata.InputSignature`).
    ``metadata`` (e.g. encoding, timesteps) is recorded in the graph; nothing reads it to run.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: use one of {', '.join(PROFILES)}.")
    if not isinstance(snn, SpikingModel):
        raise TypeError(
            f"export takes a SpikingModel (neurocuda.conversion.convert), got {type(snn).__name__}."
        )
    network = snn.network
    mappers = _mappers(profile)
    _check_modules(network, mappers)
    _check_operations(network, mappers)
    sample = sample_input.to(next(iter(network.buffers())).device)
    shapes = _record_shapes(snn, sample)

    layers = snn.layer_names()  # readable names for reports (node names cannot hold dots)

    def bind(mapper: Callable[[Any, tuple[int, ...]], Any]) -> Callable[[nn.Module], Any]:
        def mapped(module: nn.Module) -> Any:
            if module not in shapes:
                raise ValueError(f"{module} was not called on the sample input; remove it.")
            node = mapper(module, shapes[module])
            node.metadata = {**(node.metadata or {}), "layer": layers[module]}
            return node

        return mapped

    module_map = {kind: bind(mapper) for kind, mapper in mappers.items()}
    try:
        traced = nirtorch.torch_to_nir(network, module_map, default_dict={}, type_check=False)
    except (ValueError, fx.proxy.TraceError) as error:
        raise ValueError(
            f"nirtorch could not trace the spiking network ({error}). Only modules and residual "
            "additions (neurocuda.models.layers.Add) can be exported; move other operations into "
            "supported modules."
        ) from error
    nodes, edges = _splice_passthroughs(dict(traced.nodes), list(traced.edges))
    for node in nodes.values():
        if isinstance(node, nir.Input):
            node.input_type = node.output_type = {"input": np.array(snn.input_shape)}
            node.output_type = {"output": np.array(snn.input_shape)}
    signature = InputSignature()
    if profile in PORTABLE_PROFILES:
        nodes, edges, signature = make_portable(nodes, edges, tuple(snn.input_shape), profile)
    reset = {n.reset for n in network.modules() if isinstance(n, IFNeuron)}
    meta = {
        "producer": "neurocuda",
        "neurocuda_version": neurocuda.__version__,
        "nir_version": nir.version,
        "profile": profile,
        "reset": ",".join(sorted(reset)),
        "dt": signature.dt,
        **signature.to_metadata(),
        **({IF_FORMAT_KEY: LEGACY_IF_FORMAT} if profile in LEGACY_IF_PROFILES else {}),
        "time_step_convention": (
            f"dt = {signature.dt}: an integrator adds its summed input once per step; recurrent "
            "edges deliver the previous step's value; NIR shapes exclude the batch dimension"
        ),
        "output": (
            "integrated output layer o_t = o_(t-1) + y_t; prediction argmax(o_T)"
            if signature.output == "integrated"
            else "the output layer's current y_t per step; prediction argmax(sum_t y_t)"
        ),
        **(metadata or {}),
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
