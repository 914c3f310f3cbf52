"""The layer-by-layer simulator against the step-by-step one it replaced (tests/loihi2_reference.py,
the simulator of commit 04e9244 unchanged): every trace, readout and counter identical.

Random integer networks cover what the fast float32 datapath must hand back to the int64 one:
dendritic wraps, voltage clips, decays, hard and soft reset, negative and positive
weight exponents, window-sum factorized convs, several projections into one population, constant
and time-varying inputs, sub-batch passes, and both modes.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection
from neurocuda.deploy.loihi2.simulator import simulate
from neurocuda.models import build_model
from neurocuda.nir import export
from tests import loihi2_reference
from tests.test_loihi2_pinned import seeded_graph


def _assert_same(network: IntNetwork, inputs: dict, steps: int, mode: str) -> None:
    new = simulate(network, inputs, steps, mode, record=True)
    old = loihi2_reference.simulate(network, inputs, steps, mode, record=True)
    assert torch.equal(new.readout, old.readout)
    for pop in network.populations:
        for key in ("u", "v", "s"):
            mine, theirs = new.traces[pop.name][key], old.traces[pop.name][key]
            assert torch.equal(mine, theirs), f"{pop.name}.{key} differs"
    assert {k: asdict(c) for k, c in new.counters.items()} == {
        k: asdict(c) for k, c in old.counters.items()
    }


def _population(g: torch.Generator, name: str, shape, vth_range, mode: str, **kw) -> Population:
    rand = lambda lo, hi, s=shape: torch.randint(lo, hi, tuple(s), generator=g)  # noqa: E731
    vth = rand(*vth_range, (shape[0],) + (1,) * (len(shape) - 1)).expand(shape).clone()
    settings = {"vth_shift": 6, "act_shift": 6} if mode == "lava" else {}
    if mode == "loihi2":
        settings = {"vth_shift": 0, "act_shift": 0, "reset": "subtract", "reset_amount": vth}
    settings.update(kw)
    return Population(
        name, tuple(shape), vth, rand(-2000, 2000), rand(0, 4), rand(-(2**20), 2**20), **settings
    )


def random_net(seed: int, mode: str, scale: int, decays: bool, hard: bool) -> IntNetwork:
    """Graded 3x8x8 input -> conv -> IF a -> (folded 2x2 pool) conv -> IF b (+ pooled skip from a,
    large enough to fold b's summed current) -> dense -> readout c; ``scale`` sets weights' size
    (large ones wrap and clip)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi, s: torch.randint(lo, hi, tuple(s), generator=g)  # noqa: E731
    vth = (2**10, 2**22) if mode == "loihi2" else (2**8, 2**16)
    reset = {"reset": "zero", "reset_amount": None} if hard else {}
    decay = {"du": 3000, "dv": 200} if decays else {}
    pooled = rand(-scale, scale + 1, (4, 4, 3, 3)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    skip = torch.ones(4, 1, 2, 2, dtype=torch.int64) * scale
    pops = [
        _population(g, "a", (4, 8, 8), vth, mode, **reset),
        _population(g, "b", (4, 4, 4), vth, mode, **decay, **reset),
        _population(g, "c", (3,), vth, mode, spiking=False),
    ]
    projections = [
        Projection("x", "a", "conv", rand(-128, 128, (4, 3, 3, 3)), weight_exp=int(rand(-2, 3, ())),
                   padding=(1, 1), graded=True),
        Projection("a", "b", "conv", pooled, weight_exp=int(rand(-3, 4, ())), stride=(2, 2),
                   padding=(2, 2)),
        Projection("a", "b", "conv", skip, weight_exp=7, stride=(2, 2), groups=4),
        Projection("b", "c", "dense", rand(-128, 128, (3, 64)), weight_exp=int(rand(-1, 3, ()))),
    ]  # fmt: skip
    return IntNetwork(
        inputs={"x": (3, 8, 8)}, populations=pops, projections=projections, output="c"
    )


@pytest.mark.parametrize("mode", ["loihi2", "lava"])
@pytest.mark.parametrize(
    ("scale", "decays", "hard"),
    [(16, False, False), (127, False, False), (127, True, False), (40, False, True)],
)
def test_random_networks_match_the_reference(mode: str, scale: int, decays: bool, hard: bool):
    for seed in range(3):
        network = random_net(seed, mode, scale, decays, hard)
        g = torch.Generator().manual_seed(100 + seed)
        constant = {"x": torch.randint(-128, 128, (5, 3, 8, 8), generator=g)}
        _assert_same(network, constant, 12, mode)
        varying = {"x": torch.randint(-128, 128, (7, 3, 3, 8, 8), generator=g)}
        _assert_same(network, varying, 9, mode)


def test_random_networks_exercise_every_counter() -> None:
    """The parametrized nets above do wrap and clip (else they would not test the fallbacks).

    Lava's current fold (``current_wraps``) stays 0 on them: the summed dendritic inputs never
    reach 2**23 here; that fold runs in the int64 datapath, whose arithmetic is the reference's.
    """
    totals = dict.fromkeys(("voltage_clips", "dendrite_wraps"), 0)
    spikes = 0
    for seed in range(3):
        net = random_net(seed, "loihi2", 127, False, False)
        x = torch.randint(-128, 128, (5, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
        for counters in simulate(net, {"x": x}, 12).counters.values():
            for key in totals:
                totals[key] += getattr(counters, key)
            spikes += counters.spikes
    assert spikes > 0
    assert all(v > 0 for v in totals.values()), totals


def test_many_images_run_in_passes_with_the_same_result() -> None:
    """On CPU the batch runs in passes of ``64 // steps`` images: results do not depend on it."""
    network = random_net(0, "loihi2", 16, False, False)
    x = torch.randint(-128, 128, (21, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    _assert_same(network, {"x": x}, 8, "loihi2")


@pytest.mark.parametrize(
    ("hard_reset", "mode"), [(False, "loihi2"), (True, "loihi2"), (False, "lava")]
)
def test_quantized_graphs_match_the_reference_at_t32(hard_reset: bool, mode: str) -> None:
    """The pinned test's graph, quantized by the backend, over 32 steps and 12 images."""
    x = torch.randn(12, 2, 4, 4, generator=torch.Generator().manual_seed(11))
    backend = Loihi2Backend(mode=mode, input_encoding=InputEncoding.from_batches([(x, None)], 1))
    backend.prepare(seeded_graph(hard_reset))
    payload, _ = backend.input_encoding.encode(x)
    network = backend.int_network
    _assert_same(network, {next(iter(network.inputs)): payload}, 32, mode)


def test_converted_cifarnet_matches_the_reference() -> None:
    """A random-init CifarNet (8, 8, 16, 16) converted, exported and quantized, T=32."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    model = build_model("cifarnet", widths=(8, 8, 16, 16)).eval()
    graph = export(convert(model, [(x, None)], ConversionConfig(calibration_batches=1)), x[:1])
    backend = Loihi2Backend(input_encoding=InputEncoding.from_batches([(x, None)], 1))
    backend.prepare(graph)
    payload, _ = backend.input_encoding.encode(x[:3])
    network = backend.int_network
    _assert_same(network, {next(iter(network.inputs)): payload}, 32, "loihi2")
