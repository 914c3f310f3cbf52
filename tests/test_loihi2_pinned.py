"""The Loihi 2 simulator's outputs on a small seeded network, pinned bit for bit.

The digests were recorded with the code of commit 332f0b1 (before the deploy core was shared by
all targets). Any change to graph analysis, quantization or simulation that alters a single
integer of the quantized network, of a membrane/current/spike trace or of a counter fails here.
"""

from __future__ import annotations

import hashlib

import nir
import numpy as np
import pytest
import torch

from neurocuda.deploy.loihi2 import simulator
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.simulator import conv2d_as_gemm, simulate

T = 5


def _soft_if(shape: tuple[int, ...], theta: np.ndarray) -> nir.NIRGraph:
    """The exporter's nested soft-reset neuron: I -> Threshold, recurrent Scale(-theta)."""
    full = lambda a: np.broadcast_to(a, shape).astype(np.float32).copy()  # noqa: E731
    nodes = {
        "input": nir.Input(input_type=np.array(shape)),
        "integrator": nir.I(r=np.ones(shape, dtype=np.float32)),
        "threshold": nir.Threshold(threshold=full(theta / 2)),
        "reset": nir.Scale(scale=full(-theta)),
        "output": nir.Output(output_type=np.array(shape)),
    }
    edges = [("input", "integrator"), ("integrator", "threshold"), ("threshold", "reset"),
             ("reset", "integrator"), ("threshold", "output")]  # fmt: skip
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def seeded_graph(hard_reset: bool) -> nir.NIRGraph:
    """conv -> IF -> Scale -> AvgPool -> conv (+ pooled skip) -> IF -> Scale -> Flatten -> Affine
    -> readout, with seeded float weights that 8-bit mantissas do not represent exactly."""
    g = np.random.default_rng(20261201)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    theta1 = f32(g.uniform(0.5, 2.0, (4, 1, 1)))
    theta2 = f32(g.uniform(0.5, 2.0, (4, 1, 1)))

    def neuron(shape: tuple[int, ...], theta: np.ndarray) -> nir.NIRNode:
        if hard_reset:
            v = np.broadcast_to(theta, shape).astype(np.float32)
            return nir.IF(r=np.ones(shape, np.float32), v_threshold=v / 2, v_reset=-v / 2)
        return _soft_if(shape, theta)

    nodes = {
        "input": nir.Input(input_type=np.array([2, 4, 4])),
        "conv1": nir.Conv2d(input_shape=(4, 4), weight=f32(g.normal(0, 0.6, (4, 2, 3, 3))),
                            stride=1, padding=1, dilation=1, groups=1,
                            bias=f32(g.normal(0, 0.2, 4))),
        "if1": neuron((4, 4, 4), theta1),
        "scale1": nir.Scale(scale=np.broadcast_to(theta1, (4, 4, 4)).copy()),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(2, 2), weight=f32(g.normal(0, 0.4, (4, 4, 3, 3))),
                            stride=1, padding=1, dilation=1, groups=1,
                            bias=f32(g.normal(0, 0.2, 4))),
        "if2": neuron((4, 2, 2), theta2),
        "scale2": nir.Scale(scale=np.broadcast_to(theta2, (4, 2, 2)).copy()),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0),
        "fc": nir.Affine(weight=f32(g.normal(0, 0.5, (3, 16))), bias=f32(g.normal(0, 0.2, 3))),
        "readout": nir.I(r=np.ones(3, np.float32)),
        "output": nir.Output(output_type=np.array([3])),
    }  # fmt: skip
    edges = [("input", "conv1"), ("conv1", "if1"), ("if1", "scale1"), ("scale1", "pool"),
             ("pool", "conv2"), ("pool", "if2"), ("conv2", "if2"), ("if2", "scale2"),
             ("scale2", "flat"), ("flat", "fc"), ("fc", "readout"),
             ("readout", "output")]  # fmt: skip
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _digest(tensors: list[torch.Tensor], settings: object = None) -> str:
    sha = hashlib.sha256(repr(settings).encode())
    for t in tensors:
        sha.update(str(tuple(t.shape)).encode())
        sha.update(t.detach().to(torch.int64).contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def _float_digest(t: torch.Tensor) -> str:
    data = t.detach().to(torch.float64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


# (hard_reset, mode) -> digests of the quantized network, of the u/v/s traces of every population,
# of the deployed logits, and the spike/synop counters of one run.
PINNED = {
    (False, "loihi2"): {
        "network": "2309b55f75ed1ed0",
        "traces": "243d0200109f4ac0",
        "logits": "a869ca5f4a523a85",
        "spikes": {"if1.integrator": 708, "if2.integrator": 203},
        "synops": {"if1.integrator": 12036, "if2.integrator": 609},
    },
    (False, "lava"): {
        "network": "8b041893d5a25da7",
        "traces": "c8b6fb7a45e55ab3",
        "logits": "8d8b5acf50655d81",
        "spikes": {"if1.integrator": 1000, "if2.integrator": 213},
        "synops": {"if1.integrator": 17000, "if2.integrator": 639},
    },
    (True, "loihi2"): {
        "network": "2a48d74a75154fb1",
        "traces": "7cb824dcdd29d96a",
        "logits": "5139df9e0c7cfce7",
        "spikes": {"if1": 682, "if2": 159},
        "synops": {"if1": 11594, "if2": 477},
    },
}


@pytest.mark.parametrize("conv_as_gemm", [False, True], ids=["conv2d", "gemm"])
@pytest.mark.parametrize(("hard_reset", "mode"), list(PINNED))
def test_simulator_outputs_are_pinned(
    hard_reset: bool, mode: str, conv_as_gemm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the convolutions the simulator runs on a GPU (patches times weights)."""
    monkeypatch.setattr(simulator, "convolves_as_gemm", lambda device: conv_as_gemm)
    x = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    encoding = InputEncoding.from_batches([(x, None)], 1)
    backend = Loihi2Backend(mode=mode, input_encoding=encoding)
    backend.prepare(seeded_graph(hard_reset))
    net = backend.int_network
    network = [
        t
        for pop in net.populations
        for t in (pop.vth, pop.bias_mant, pop.bias_exp, pop.v_init, pop.reset_amount)
        if t is not None
    ] + [p.weight for p in net.projections]
    settings = [(p.name, p.du, p.dv, p.vth_shift, p.act_shift, p.reset, p.spiking)
                for p in net.populations]  # fmt: skip
    settings += [(p.source, p.target, p.kind, p.weight_exp, p.num_weight_bits, p.stride,
                  p.padding, p.dilation, p.groups, p.graded) for p in net.projections]  # fmt: skip
    payload, clipped = encoding.encode(x)
    steps = T + (net.depth() if mode == "lava" else 0)
    result = simulate(net, {next(iter(net.inputs)): payload}, steps, mode, record=True)
    traces = [result.readout] + [
        result.traces[pop.name][key] for pop in net.populations for key in ("u", "v", "s")
    ]
    out = backend.run(x, T)
    got = {
        "network": _digest(network, settings),
        "traces": _digest(traces),
        "logits": _float_digest(out.logits),
        "spikes": out.spikes,
        "synops": out.synops,
    }
    assert clipped == 0
    assert got == PINNED[(hard_reset, mode)]


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"),
    [((1, 1), (1, 1), (1, 1), 1), ((2, 1), (0, 2), (1, 1), 2), ((1, 2), (2, 1), (2, 1), 4)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_as_gemm_equals_conv2d_on_integers(stride, padding, dilation, groups, dtype) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-128, 128, (3, 8, 9, 7), generator=g).to(dtype)
    weight = torch.randint(-128, 128, (12, 8 // groups, 3, 2), generator=g).to(dtype)
    expected = torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)
    got = conv2d_as_gemm(x, weight, stride, padding, dilation, groups)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
