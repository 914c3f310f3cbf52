"""Rewrite an exported graph into plain NIR nodes that third-party importers map (docs/interop.md).

The faithful export uses nested graphs, ``I``, ``Threshold`` and ``Scale``; no importer maps all
of them, and none can set an initial membrane. A portable graph keeps the same network in nodes
that they do map:

- every neuron's threshold is normalised to 1 (its input weights and bias divided by ``theta``
  per channel) and it resets to 0 (hard) or by subtracting 1 (soft); the membrane is the real one
  ``v = u + v_init`` divided by ``theta``, so it must start at ``v_init / theta``;
- the initial membrane arrives through an **indicator input channel**, appended after the image
  channels, that is 1 at ``t = 0`` and 0 afterwards: an ``Input -> <neuron>_init`` conv (kernel =
  stride = the input/layer size ratio, zero weights except the indicator's) adds
  ``v_init / theta`` to each neuron's input at ``t = 0`` only;
- ``Scale(theta)`` on the spikes becomes a diagonal 1x1 ``Conv2d`` (or a diagonal ``Linear``);
- ``Flatten`` uses negative dims (the same with or without a batch dimension);
- the output integrator ``I`` is dropped: the graph outputs the output layer's per-step current
  ``y_t`` and the prediction is ``argmax(sum_t y_t)``.

The input signature (extra channel, output form, ``dt``, reset convention) is written into the
graph's metadata by :mod:`neurocuda.nir.metadata`. Profiles (all need per-channel thresholds):

- ``portable-hard``: ``IF(r=1, v_threshold=1, v_reset=0)``, NIR's own semantics.
- ``portable-soft``: the same ``IF`` read with reset by subtraction (``reset_convention``
  ``subtract``: run it with ``Executor(graph, convention="subtract")``).
- ``spikingjelly``: ``portable-hard`` with thresholds one float32 ulp above 1 (its ``IFNode`` fires
  on ``v >= threshold``, which for ``1 + ulp`` is ``v > 1``); ``reset_convention``
  ``spikingjelly``: our executor reads the file as spikingjelly does, and then computes exactly
  ``portable-hard``.
- ``snntorch``: ``portable-hard`` with each ``IF`` written as ``LIF(tau=2**60 * 1e-4, r=2**60)``
  at ``dt = 1e-4`` (its ``IF`` import is broken; this ``LIF`` becomes ``Leaky(beta=1)``, reset to
  zero). In NIR's Euler step at ``dt = 1e-4`` the factors are exact powers of two.

Chain profiles, for importers that run graphs through nirtorch's legacy ``load`` (its executor is
not topologically ordered: a node with two inputs can run before one of them), keep the graph a
chain: the initial membrane is not injected from the input but travels in a **carrier channel**
appended to every layer. The first conv reads the indicator channel, every conv or affine layer
feeding a neuron adds ``v_init / theta`` from the incoming carrier (one kernel tap that always lands
inside the input) and drives its own carrier neuron with ``CARRIER_DRIVE``, so that the carrier
fires once, at ``t = 0``, and never again. ``AvgPool2d`` (unmapped there) becomes ``SumPool2d``
on the spikes, its ``1 / k**2`` folded into the following diagonal conv. Both model the soft reset:

- ``norse``: each neuron is ``CubaLIF(tau_syn=dt, tau_mem=2**60, r=2**60, v_leak=0)`` at
  ``dt = 1``, run with ``reset_method=reset_subtract`` (norse passes it to ``CubaLIF`` only): the
  synapse passes its input on, the membrane integrates it without leak (powers of two).
- ``sinabs``: ``IF(r=1, v_threshold=1)`` in nir's pre-1.0.6 form (no ``v_reset``, which sinabs'
  pinned nir cannot read), run with sinabs' own semantics (``reset_convention`` ``sinabs``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import nir
import numpy as np

from neurocuda.nir.metadata import InputSignature, ResetConvention

PortableProfile = Literal[
    "portable-hard", "portable-soft", "spikingjelly", "snntorch", "norse", "sinabs"
]
PORTABLE_PROFILES: tuple[str, ...] = get_args(PortableProfile)
CHAIN_PROFILES: tuple[str, ...] = ("norse", "sinabs")
RESET_OF_PROFILE = {
    "portable-hard": "zero",
    "portable-soft": "subtract",
    "spikingjelly": "zero",
    "snntorch": "zero",
    "norse": "subtract",
    "sinabs": "subtract",
}
CONVENTION_OF_PROFILE: dict[str, ResetConvention] = {
    "portable-soft": "subtract",
    "spikingjelly": "spikingjelly",
    "norse": "subtract",
    "sinabs": "sinabs",
}
"""The ``reset_convention`` each profile is run with (``nir`` where not listed)."""
LEGACY_IF_PROFILES: tuple[str, ...] = ("sinabs",)
"""Profiles written with ``IF`` nodes in nir's pre-1.0.6 form (``neurocuda.nir.io.save``)."""
SNNTORCH_DT = 1e-4
"""snnTorch's importer assumes this step (``snntorch/import_nir.py``, ``dt = 1e-4``)."""
SNNTORCH_GAIN = float(2**60)
"""``r`` of the snnTorch encoding; ``tau = r * dt``, so that ``dt / tau`` is ``2**-60`` exactly."""
CARRIER_DRIVE = 1.5
"""Input of a carrier neuron at ``t = 0``: above the threshold 1 once, below it after any reset."""


class NeuronMarker(nir.NIRNode):
    """Placeholder for an IF neuron during export: its per-sample ``threshold`` and ``v_init``."""

    def __init__(self, threshold: np.ndarray, v_init: np.ndarray) -> None:
        self.threshold = threshold
        self.v_init = v_init
        self.input_type = {"input": np.array(threshold.shape)}
        self.output_type = {"output": np.array(threshold.shape)}
        self.metadata = {}


def _per_channel(name: str, values: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` or ``[C]`` values that are uniform over space, as ``[C]``."""
    flat = values.reshape(values.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise ValueError(
            f"Neuron {name!r} has per-neuron (not per-channel) parameters; portable profiles need "
            "one threshold and one initial membrane per channel."
        )
    return flat[:, 0].astype(np.float32)


def _diagonal(values: np.ndarray, shape: tuple[int, ...]) -> nir.NIRNode:
    """``x * values[c]`` per channel as a plain weighted node (1x1 Conv2d, or Linear)."""
    if len(shape) == 3:
        weight = np.zeros((len(values), len(values), 1, 1), dtype=np.float32)
        weight[np.arange(len(values)), np.arange(len(values)), 0, 0] = values
        return nir.Conv2d(
            input_shape=tuple(shape[1:]),
            weight=weight,
            stride=np.array([1, 1]),
            padding=np.array([0, 0]),
            dilation=np.array([1, 1]),
            groups=1,
            bias=np.zeros(len(values), dtype=np.float32),
        )
    if len(shape) == 1:
        return nir.Linear(weight=np.diag(values).astype(np.float32))
    raise ValueError(f"portable profiles support [C, H, W] or [C] neurons, not {shape}.")


def _neuron(profile: str, shape: tuple[int, ...]) -> nir.NIRNode:
    ones = np.ones(shape, dtype=np.float32)
    zeros = np.zeros(shape, dtype=np.float32)
    if profile == "norse":
        return nir.CubaLIF(
            tau_syn=ones,
            tau_mem=ones * np.float32(SNNTORCH_GAIN),
            r=ones * np.float32(SNNTORCH_GAIN),
            v_leak=zeros,
            v_threshold=ones,
            v_reset=zeros,
            w_in=ones,
        )
    if profile == "snntorch":
        return nir.LIF(
            tau=ones * np.float32(SNNTORCH_GAIN * SNNTORCH_DT),
            r=ones * np.float32(SNNTORCH_GAIN),
            v_leak=zeros,
            v_threshold=ones,
            v_reset=zeros,
        )
    threshold = np.nextafter(ones, np.float32(np.inf)) if profile == "spikingjelly" else ones
    return nir.IF(r=ones, v_threshold=threshold, v_reset=zeros)


def _injection(
    values: np.ndarray, input_shape: tuple[int, ...], shape: tuple[int, ...]
) -> nir.Conv2d:
    """A conv from the input whose output is ``values[c]`` where the indicator channel is 1."""
    channels, height, width = input_shape
    size = (height, width) if len(shape) == 1 else tuple(shape[1:])
    if height % size[0] or width % size[1]:
        raise ValueError(f"cannot inject into a layer of shape {shape} from input {input_shape}.")
    kernel = (height // size[0], width // size[1])
    weight = np.zeros((len(values), channels, *kernel), dtype=np.float32)
    weight[:, channels - 1, 0, 0] = values
    return nir.Conv2d(
        input_shape=(height, width),
        weight=weight,
        stride=np.array(kernel),
        padding=np.array([0, 0]),
        dilation=np.array([1, 1]),
        groups=1,
        bias=np.zeros(len(values), dtype=np.float32),
    )


def _tap(layer: nir.Conv2d) -> tuple[int, int]:
    """The kernel tap that reads input pixel ``(i * stride, j * stride)``, inside for any output."""
    padding = np.broadcast_to(np.asarray(layer.padding), (2,))
    if padding.dtype.kind not in "iu" or np.any(padding >= np.asarray(layer.weight.shape[2:])):
        raise ValueError(f"chain profiles need integer padding smaller than the kernel: {layer}.")
    return int(padding[0]), int(padding[1])


def _with_carrier(
    layer: nir.Conv2d | nir.Affine, injection: np.ndarray, carrier_in: int, has_carrier_in: bool
) -> nir.Conv2d | nir.Affine:
    """``layer`` with a carrier output (driven by ``CARRIER_DRIVE`` from the incoming carrier) and
    the incoming carrier adding ``injection`` to its other outputs.

    ``carrier_in``: how many trailing input features (Affine) or channels (Conv2d) are carrier;
    ``has_carrier_in``: whether the weight already has them (the first conv reads the indicator).
    """
    weight, out = layer.weight, layer.weight.shape[0]
    if not has_carrier_in:
        pad = np.zeros((out, carrier_in, *weight.shape[2:]), np.float32)
        weight = np.concatenate([weight, pad], axis=1)
    weight = np.concatenate([weight, np.zeros((1, *weight.shape[1:]), np.float32)], axis=0)
    first = weight.shape[1] - carrier_in  # the first carrier input
    if isinstance(layer, nir.Conv2d):
        if int(layer.groups) != 1:
            raise ValueError(f"chain profiles need ungrouped convolutions: {layer}.")
        i, j = _tap(layer)
        weight[:out, first, i, j] = injection
        weight[out, first, i, j] = CARRIER_DRIVE
    else:
        weight[:out, first] = injection
        weight[out, first] = CARRIER_DRIVE
    bias = np.append(layer.bias, np.float32(0)).astype(np.float32)
    return dataclasses.replace(layer, weight=weight, bias=bias)


def _chain_error(profile: str, name: str) -> ValueError:
    return ValueError(
        f"profile={profile!r} writes a chain (the importer runs graphs with nirtorch's legacy "
        f"executor, which is not topologically ordered), but node {name!r} has several inputs or "
        "outputs (a residual network?); use portable-soft, spikingjelly or snntorch."
    )


def make_portable(
    nodes: dict[str, nir.NIRNode],
    edges: list[tuple[str, str]],
    image_shape: tuple[int, ...],
    profile: str,
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]], InputSignature]:
    """Rewrite an export whose neurons are :class:`NeuronMarker` nodes; see the module doc."""
    nodes, edges = dict(nodes), list(edges)
    if len(image_shape) != 3:
        raise ValueError(f"portable profiles take image inputs [C, H, W], not {image_shape}.")
    input_shape = (image_shape[0] + 1, *image_shape[1:])
    chain = profile in CHAIN_PROFILES

    def sources(name: str) -> list[str]:
        return [s for s, d in edges if d == name]

    def targets(name: str) -> list[str]:
        return [d for s, d in edges if s == name]

    if chain:
        for name in nodes:
            if len(sources(name)) > 1 or len(targets(name)) > 1:
                raise _chain_error(profile, name)
    (input_name,) = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    nodes[input_name] = nir.Input(input_type=np.array(input_shape))
    reads_indicator = set(targets(input_name))
    for target in reads_indicator:
        layer = nodes[target]
        if not isinstance(layer, nir.Conv2d):
            raise ValueError(f"portable profiles need a Conv2d after the input, not {target!r}.")
        pad = np.zeros((layer.weight.shape[0], 1, *layer.weight.shape[2:]), np.float32)
        weight = np.concatenate([layer.weight, pad], axis=1)
        nodes[target] = dataclasses.replace(layer, weight=weight)
    extra: list[tuple[str, nir.NIRNode]] = []
    carried: set[str] = set()  # layers that already read and write the carrier
    for name, marker in list(nodes.items()):
        if not isinstance(marker, NeuronMarker):
            continue
        shape = tuple(marker.threshold.shape)
        theta = _per_channel(name, marker.threshold)
        v_init = _per_channel(name, marker.v_init)
        (scale_name,) = targets(name) or [None]
        if scale_name is None or not isinstance(nodes[scale_name], nir.Scale):
            raise ValueError(f"Neuron {name!r} must be followed by its Scale(theta) node.")
        if chain:
            shape = (shape[0] + 1, *shape[1:])
            nodes[scale_name] = _diagonal(np.append(theta, np.float32(1)), shape)
        else:
            nodes[scale_name] = _diagonal(theta, shape)
        feeds = sources(name)
        layer = nodes[feeds[0]] if len(feeds) == 1 else None
        if isinstance(layer, nir.Conv2d | nir.Affine) and targets(feeds[0]) == [name]:
            factor = theta.reshape(-1, *[1] * (layer.weight.ndim - 1))
            layer = dataclasses.replace(
                layer, weight=layer.weight / factor, bias=layer.bias / theta
            )
            if chain:
                width = _carrier_width(nodes, sources(feeds[0]), layer)
                has = feeds[0] in reads_indicator
                layer = _with_carrier(layer, v_init / theta, width, has)
                carried.add(feeds[0])
            nodes[feeds[0]] = layer
        elif chain:
            raise _chain_error(profile, name)
        else:  # a sum (residual) or an unweighted input: normalise it with a diagonal node
            norm = f"{name}_norm"
            extra.append((norm, _diagonal(np.float32(1) / theta, shape)))
            edges = [(s, norm if d == name else d) for s, d in edges] + [(norm, name)]
        nodes[name] = _neuron(profile, shape)
        if chain or not np.any(v_init != 0):
            continue
        init = f"{name}_init"
        extra.append((init, _injection(v_init / theta, input_shape, shape)))
        if len(shape) == 1:
            flat = nir.Flatten(input_type={"input": np.array([len(v_init), 1, 1])}, start_dim=-3)
            extra.append((f"{init}_flat", flat))
            edges += [(input_name, init), (init, f"{init}_flat"), (f"{init}_flat", name)]
        else:
            edges += [(input_name, init), (init, name)]
    if chain:
        nodes, edges = _carry_through(nodes, edges, carried)
    for name, node in list(nodes.items()):
        if isinstance(node, nir.Flatten):
            rank = len(node.input_type["input"])
            start, end = int(node.start_dim), int(node.end_dim)
            nodes[name] = nir.Flatten(
                input_type=node.input_type,
                start_dim=start - rank if start >= 0 else start,
                end_dim=end - rank if end >= 0 else end,
            )
        elif isinstance(node, nir.I) and all(
            isinstance(nodes[t], nir.Output) for t in targets(name)
        ):
            edges = [(s, t) for s in sources(name) for t in targets(name)] + [
                e for e in edges if name not in e
            ]
            del nodes[name]
    nodes.update(extra)
    signature = InputSignature(
        extra_channels=1,
        indicator_steps=1,
        output="per_step",
        dt=SNNTORCH_DT if profile == "snntorch" else 1.0,
        reset_convention=CONVENTION_OF_PROFILE.get(profile, "nir"),
    )
    return nodes, edges, signature


def _carrier_width(
    nodes: dict[str, nir.NIRNode], feeds: list[str], layer: nir.Conv2d | nir.Affine
) -> int:
    """Carrier inputs of ``layer``: 1 channel (Conv2d, or Affine after a neuron), or the spatial
    size of the carrier channel that a Flatten before an Affine spreads over features."""
    source = nodes[feeds[0]] if len(feeds) == 1 else None
    if isinstance(layer, nir.Affine) and isinstance(source, nir.Flatten):
        return int(np.prod(source.input_type["input"][1:]))
    return 1


def _carry_through(
    nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], carried: set[str]
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """After the neurons of a chain profile: pass the carrier through pooling and Flatten nodes,
    give layers that feed no neuron zero weights for it, and turn ``AvgPool2d`` after a neuron's
    diagonal conv into ``SumPool2d`` on the spikes with ``1 / k**2`` folded into that conv."""
    target = dict(edges)  # a chain: one target per node
    source = {d: s for s, d in edges}
    for name, node in list(nodes.items()):
        if isinstance(node, nir.Flatten):
            shape = np.array(node.input_type["input"])
            shape[0] += 1
            nodes[name] = dataclasses.replace(node, input_type={"input": shape})
        elif isinstance(node, nir.AvgPool2d):
            diagonal = nodes[source[name]]
            spikes = source[source[name]]
            if not isinstance(diagonal, nir.Conv2d) or not isinstance(
                nodes[spikes], nir.IF | nir.CubaLIF
            ):
                raise ValueError(f"chain profiles need AvgPool2d {name!r} after a neuron's scale.")
            kernel = np.broadcast_to(np.asarray(node.kernel_size), (2,))
            area = np.float32(1) / np.float32(np.prod(kernel))
            nodes[name] = nir.SumPool2d(
                kernel_size=node.kernel_size, stride=node.stride, padding=node.padding
            )
            pooled = _pooled_size(diagonal.input_shape, node)
            nodes[source[name]] = dataclasses.replace(
                diagonal, weight=diagonal.weight * area, input_shape=pooled
            )
            after = target[name]
            edges = [
                e
                for e in edges
                if e not in ((spikes, source[name]), (source[name], name), (name, after))
            ] + [(spikes, name), (name, source[name]), (source[name], after)]
            target, source = dict(edges), {d: s for s, d in edges}
    for name, node in list(nodes.items()):
        if name in carried or not isinstance(node, nir.Conv2d | nir.Affine):
            continue
        if isinstance(node, nir.Conv2d) and isinstance(nodes[source[name]], nir.IF | nir.CubaLIF):
            continue  # a neuron's diagonal conv: already carries
        if isinstance(node, nir.Conv2d) and isinstance(nodes[source[name]], nir.SumPool2d):
            continue  # the same, after its pooling moved before it
        width = _carrier_width(nodes, [source[name]], node)
        pad = np.zeros((node.weight.shape[0], width, *node.weight.shape[2:]), np.float32)
        nodes[name] = dataclasses.replace(node, weight=np.concatenate([node.weight, pad], axis=1))
        flatten = nodes[source[name]]
        if isinstance(node, nir.Affine) and isinstance(flatten, nir.Flatten):
            shape = tuple(int(s) for s in flatten.input_type["input"])
            if shape[1:] == (1, 1):
                nodes, edges = _as_pointwise_conv(nodes, edges, name, source[name], shape)
    return nodes, edges


def _as_pointwise_conv(
    nodes: dict[str, nir.NIRNode],
    edges: list[tuple[str, str]],
    name: str,
    flatten: str,
    shape: tuple[int, ...],
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """``Flatten -> Affine`` on ``[C, 1, 1]`` as ``Conv2d(1x1) -> Flatten``: the same values, but
    the product no longer depends on the order of the batch rows (sinabs passes ``[B * T]``
    batch-major, our executor ``[T * B]``; a matrix product rounds a row differently by its
    position in the batch, a convolution does not)."""
    affine = nodes[name]
    weight = affine.weight.reshape(*affine.weight.shape, 1, 1)
    nodes[name] = nir.Conv2d(
        input_shape=(1, 1),
        weight=weight,
        stride=np.array([1, 1]),
        padding=np.array([0, 0]),
        dilation=np.array([1, 1]),
        groups=1,
        bias=affine.bias,
    )
    rank = len(shape)
    nodes[flatten] = nir.Flatten(
        input_type={"input": np.array([weight.shape[0], 1, 1])}, start_dim=-rank, end_dim=-1
    )
    (before,) = [s for s, d in edges if d == flatten]
    (after,) = [d for s, d in edges if s == name]
    removed = {(before, flatten), (flatten, name), (name, after)}
    edges = [e for e in edges if e not in removed] + [
        (before, name),
        (name, flatten),
        (flatten, after),
    ]
    return nodes, edges


def _pooled_size(size: np.ndarray, pool: nir.AvgPool2d) -> np.ndarray:
    kernel, stride, padding = (
        np.broadcast_to(np.asarray(v), (2,)) for v in (pool.kernel_size, pool.stride, pool.padding)
    )
    return (np.asarray(size) + 2 * padding - kernel) // stride + 1
