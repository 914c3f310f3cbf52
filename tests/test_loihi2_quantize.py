"""Loihi 2 quantizer: exact 8-bit input encoding and per-channel weight gains."""

from __future__ import annotations

import torch

from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.quantize import quantize
from neurocuda.deploy.network import FloatNetwork, FloatPopulation, FloatProjection

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).reshape(1, 3, 1, 1)


def test_normalised_8bit_images_encode_exactly_as_pixel_minus_128() -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (8, 3, 5, 5), generator=g)
    pixels[0, :, 0, 0], pixels[1, :, 0, 0] = 0, 255  # every channel's extremes occur
    x = (pixels / 255 - MEAN) / STD
    encoding = InputEncoding.from_batches([(x[:4], None), (x[4:], None)], num_batches=2)
    payload, clipped = encoding.encode(x)
    assert clipped == 0 and torch.equal(payload, pixels - 128)
    outside, clipped = encoding.encode(x + 10)
    assert clipped > 0 and int(outside.max()) == 127  # saturated payloads are counted


def one_layer(weight: torch.Tensor, theta: torch.Tensor) -> FloatNetwork:
    n = weight.shape[0]
    pop = FloatPopulation("p", "subtract", (n,), theta, torch.zeros(n), torch.zeros(n))
    proj = FloatProjection("s", "p", "dense", weight)
    readout = FloatPopulation("r", "readout", (1,), torch.ones(1), torch.zeros(1), torch.zeros(1))
    return FloatNetwork(
        inputs={"s": (weight.shape[1],)},
        populations=[pop, readout],
        projections=[proj, FloatProjection("p", "r", "dense", torch.ones(1, n))],
        output="r",
    )


def weight_over_threshold_error(gains: bool) -> torch.Tensor:
    """Relative error of each neuron's weights in units of its threshold, after quantization."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 64, generator=g, dtype=torch.float64)
    weight[1] *= 0.01  # a channel with 100x smaller weights (and threshold), as BN folding makes
    theta = torch.tensor([1.0, 0.01], dtype=torch.float64)
    net, _ = quantize(one_layer(weight, theta), InputEncoding.uniform(1.0), channel_gains=gains)
    proj, pop = net.projections[0], net.populations[0]
    effective = proj.weight.double() * 2.0 ** (6 + proj.weight_exp) / pop.vth.double()[:, None]
    exact = weight / theta[:, None]
    return ((effective - exact).norm(dim=1) / exact.norm(dim=1)).float()


def test_channel_gains_give_small_channels_the_full_mantissa() -> None:
    with_gains, without = weight_over_threshold_error(True), weight_over_threshold_error(False)
    assert with_gains.max() < 0.02  # both channels use 7-8 bits (power-of-two gains)
    assert without[1] > 0.5  # the small channel lives on one or two mantissa steps
