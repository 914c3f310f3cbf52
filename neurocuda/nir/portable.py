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
  on ``v >= threshold``).
- ``snntorch``: ``portable-hard`` with each ``IF`` written as ``LIF(tau=2**60 * 1e-4, r=2**60)``
  at ``dt = 1e-4`` (its ``IF`` import is broken; this ``LIF`` becomes ``Leaky(beta=1)``, reset to
  zero). In NIR's Euler step at ``dt = 1e-4`` the factors are exact powers of two.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import nir
import numpy as np

from neurocuda.nir.metadata import InputSignature

PortableProfile = Literal["portable-hard", "portable-soft", "spikingjelly", "snntorch"]
PORTABLE_PROFILES: tuple[str, ...] = ("portable-hard", "portable-soft", "spikingjelly", "snntorch")
RESET_OF_PROFILE = {
    "portable-hard": "zero",
    "portable-soft": "subtract",
    "spikingjelly": "zero",
    "snntorch": "zero",
}
SNNTORCH_DT = 1e-4
"""snnTorch's importer assumes this step (``snntorch/import_nir.py``, ``dt = 1e-4``)."""
SNNTORCH_GAIN = float(2**60)
"""``r`` of the snnTorch encoding; ``tau = r * dt``, so that ``dt / tau`` is ``2**-60`` exactly."""


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

    def sources(name: str) -> list[str]:
        return [s for s, d in edges if d == name]

    def targets(name: str) -> list[str]:
        return [d for s, d in edges if s == name]

    (input_name,) = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    nodes[input_name] = nir.Input(input_type=np.array(input_shape))
    for target in targets(input_name):
        layer = nodes[target]
        if not isinstance(layer, nir.Conv2d):
            raise ValueError(f"portable profiles need a Conv2d after the input, not {target!r}.")
        pad = np.zeros((layer.weight.shape[0], 1, *layer.weight.shape[2:]), np.float32)
        weight = np.concatenate([layer.weight, pad], axis=1)
        nodes[target] = dataclasses.replace(layer, weight=weight)
    extra: list[tuple[str, nir.NIRNode]] = []
    for name, marker in list(nodes.items()):
        if not isinstance(marker, NeuronMarker):
            continue
        shape = tuple(marker.threshold.shape)
        theta = _per_channel(name, marker.threshold)
        v_init = _per_channel(name, marker.v_init)
        (scale_name,) = targets(name) or [None]
        if scale_name is None or not isinstance(nodes[scale_name], nir.Scale):
            raise ValueError(f"Neuron {name!r} must be followed by its Scale(theta) node.")
        nodes[scale_name] = _diagonal(theta, shape)
        feeds = sources(name)
        layer = nodes[feeds[0]] if len(feeds) == 1 else None
        if isinstance(layer, nir.Conv2d | nir.Affine) and targets(feeds[0]) == [name]:
            factor = theta.reshape(-1, *[1] * (layer.weight.ndim - 1))
            nodes[feeds[0]] = dataclasses.replace(
                layer, weight=layer.weight / factor, bias=layer.bias / theta
            )
        else:  # a sum (residual) or an unweighted input: normalise it with a diagonal node
            norm = f"{name}_norm"
            extra.append((norm, _diagonal(np.float32(1) / theta, shape)))
            edges = [(s, norm if d == name else d) for s, d in edges] + [(norm, name)]
        nodes[name] = _neuron(profile, shape)
        if np.any(v_init != 0):
            init = f"{name}_init"
            extra.append((init, _injection(v_init / theta, input_shape, shape)))
            if len(shape) == 1:
                flat = nir.Flatten(
                    input_type={"input": np.array([len(v_init), 1, 1])}, start_dim=-3
                )
                extra.append((f"{init}_flat", flat))
                edges += [(input_name, init), (init, f"{init}_flat"), (f"{init}_flat", name)]
            else:
                edges += [(input_name, init), (init, name)]
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
        reset_convention="subtract" if RESET_OF_PROFILE[profile] == "subtract" else "nir",
    )
    return nodes, edges, signature
