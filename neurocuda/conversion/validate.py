"""Stage 1: trace the ANN with torch.fx and check that every operation has a spiking equivalent.

Tracing (rather than walking ``named_modules``) sees what ``forward`` really calls: a functional
``F.relu`` or ``x + y`` hidden in a forward would otherwise be dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from neurocuda.conversion.errors import ConversionError
from neurocuda.models.layers import Add
from neurocuda.models.qcfs import QCFS
from neurocuda.nir.support import unsupported_options

ACTIVATIONS = (nn.ReLU, QCFS)
WEIGHTED = (nn.Conv2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)  # Sync: trainer=ddp's, mid-fit
PASSIVE = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, Add)
SUPPORTED = ACTIVATIONS + WEIGHTED + BATCHNORMS + PASSIVE

_FIXES: dict[type, str] = {
    nn.MaxPool2d: "use nn.AvgPool2d (max pooling has no exact spiking equivalent)",
    nn.GELU: "train with model.activation=relu or qcfs",
    nn.SiLU: "train with model.activation=relu or qcfs",
    nn.LeakyReLU: "train with model.activation=relu or qcfs",
    nn.Sigmoid: "train with model.activation=relu or qcfs",
    nn.Tanh: "train with model.activation=relu or qcfs",
    nn.ReLU6: "use nn.ReLU or QCFS (clipping is learned by qcfs)",
}


class _ModuleTracer(fx.Tracer):
    """Keeps our conversion-relevant modules as single graph nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (Add, *SUPPORTED)) or super().is_leaf_module(m, qualname)


@dataclass
class NetworkPlan:
    """What the later stages need to know about the ANN's graph."""

    batchnorm_of: dict[str, str] = field(default_factory=dict)
    """BatchNorm name -> name of the conv/linear it folds into."""
    activations: dict[str, torch.Size] = field(default_factory=dict)
    """Activation name -> output shape of one sample (in call order)."""
    adaptive_pools: dict[str, torch.Size] = field(default_factory=dict)
    """AdaptiveAvgPool2d name -> input shape of one sample."""
    final_linear: str = ""


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` keeping layers, ``Add`` and activations as nodes."""
    try:
        graph = _ModuleTracer().trace(model)
    except Exception as exc:
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Conversion needs a forward "
            "without data-dependent control flow; write merges as neurocuda.models.layers.Add."
        ) from exc
    return fx.GraphModule(model, graph)


def _check_node(node: fx.Node, modules: dict[str, nn.Module]) -> None:
    if node.op in ("placeholder", "output"):
        return
    if node.op != "call_module":
        raise ConversionError(
            f"Operation {node.op} {getattr(node.target, '__name__', node.target)!r} (graph node "
            f"{node.name!r}) is not a module, so it cannot become a spiking layer. Write it as a "
            "module: nn.ReLU/QCFS for activations, nn.Flatten, neurocuda.models.layers.Add for "
            "residual sums."
        )
    module = modules[str(node.target)]
    if not isinstance(module, SUPPORTED):
        fix = _FIXES.get(type(module), "replace it by a supported layer")
        supported = ", ".join(sorted(t.__name__ for t in SUPPORTED))
        raise ConversionError(
            f"Layer {node.target!r} ({type(module).__name__}) has no spiking equivalent: {fix}. "
            f"Supported layers: {supported}."
        )
    base = next(t for t in SUPPORTED if isinstance(module, t))
    if type(module).forward is not base.forward:
        raise ConversionError(
            f"Layer {node.target!r} ({type(module).__name__}) overrides {base.__name__}.forward; "
            f"conversion would replace its computation by {base.__name__}'s and change the "
            f"network silently. Use {base.__name__} itself (move the extra computation into "
            "the weights, e.g. standardise them before training ends)."
        )
    if problem := unsupported_options(module):
        raise ConversionError(f"Layer {node.target!r} ({type(module).__name__}): {problem}.")
    if isinstance(module, BATCHNORMS) and module.running_mean is None:
        raise ConversionError(
            f"BatchNorm {node.target!r} has no running statistics (track_running_stats=False), "
            "so it cannot be folded; train it with track_running_stats=True."
        )
    if isinstance(module, BATCHNORMS):
        parent = node.args[0]
        ok = (
            isinstance(parent, fx.Node)
            and parent.op == "call_module"
            and isinstance(modules[str(parent.target)], WEIGHTED)
            and len(parent.users) == 1
        )
        if not ok:
            raise ConversionError(
                f"BatchNorm {node.target!r} does not directly follow a conv/linear layer whose "
                "only consumer it is, so it cannot be folded; place it right after its conv."
            )


def _check_merges(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
    """Refuse an ``Add`` of a value from before the first activation and one from after it: the
    runtime runs the layers before the first neuron once per image (a constant current, B
    samples) and those after it at every step (T x B), so the two do not line up."""
    stepped: set[fx.Node] = set()  # nodes that run at every time step
    for node in gm.graph.nodes:
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        inputs = node.all_input_nodes
        if isinstance(module, ACTIVATIONS) or any(n in stepped for n in inputs):
            stepped.add(node)
        if isinstance(module, Add) and 0 < sum(n in stepped for n in inputs) < len(inputs):
            before = next(n for n in inputs if n not in stepped)
            raise ConversionError(
                f"Add {node.target!r} sums {before.name!r}, computed before the first activation, "
                "with a value computed after one; the spiking network runs the layers before its "
                "first neuron once per image, so the two do not line up. Start the residual "
                "branch after an activation (as the ResNets here do)."
            )


def plan_conversion(model: nn.Module, input_shape: tuple[int, ...]) -> NetworkPlan:
    """Validate ``model`` (in eval mode) and describe its graph; raise ConversionError if needed."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        _check_node(node, modules)
    device = next(model.parameters(), torch.empty(0)).device  # a CUDA model traces on CUDA
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
    plan = NetworkPlan()
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        name, module = str(node.target), modules[str(node.target)]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, BATCHNORMS):
            plan.batchnorm_of[name] = str(node.args[0].target)
        elif isinstance(module, ACTIVATIONS):
            plan.activations[name] = node.meta["tensor_meta"].shape[1:]
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            plan.adaptive_pools[name] = node.args[0].meta["tensor_meta"].shape[1:]
    if not plan.activations:
        raise ConversionError(
            "The network has no activation (nn.ReLU or QCFS), so nothing in it would spike; "
            "convert a network with at least one."
        )
    shared = [n for n, c in calls.items() if c > 1 and isinstance(modules[n], (*ACTIVATIONS, Add))]
    if shared:
        raise ConversionError(
            f"Modules {shared} are called more than once in forward; stateful neurons need one "
            "module per call site. Create a separate activation/Add module for each use."
        )
    _check_merges(gm, modules)
    (output,) = (n for n in gm.graph.nodes if n.op == "output")
    last = output.args[0]
    if not (
        isinstance(last, fx.Node)
        and last.op == "call_module"
        and isinstance(modules[str(last.target)], nn.Linear)
    ):
        raise ConversionError(
            "The network must end with an nn.Linear layer (it becomes the non-spiking integrating "
            f"output); its output comes from {getattr(last, 'target', last)!r} instead."
        )
    plan.final_linear = str(last.target)
    return plan


def check_image_shape(images: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    """Refuse calibration images of another shape than ``input_shape``, the shape the conversion
    plans pools for (a 40x40 image through a plan for 32x32 pools the wrong region, silently)."""
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise ConversionError(
            f"Calibration images are {tuple(images.shape[1:])} per sample but the conversion is "
            f"planned for input_shape={tuple(input_shape)}; pass images of that shape or set "
            "ConversionConfig(input_shape=...) to the data's."
        )
