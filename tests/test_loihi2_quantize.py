"""Loihi 2 quantizer: exact 8-bit input encoding, per-channel weight gains, bias correction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.quantize import quantize
from neurocuda.deploy.loihi2.simulator import simulate
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


def test_bias_correction_cancels_the_mean_current_of_weight_rounding() -> None:
    """Dense layer: with the sources' mean inputs, each neuron's mean input current after
    quantization (weights and bias) equals the float one to within the bias's own rounding."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 64, generator=g, dtype=torch.float64) * 0.05
    network = one_layer(weight, torch.ones(16, dtype=torch.float64))
    rates = torch.rand(64, generator=g, dtype=torch.float64) * 100  # mean payloads of input "s"
    means = {"s": rates, "p": torch.rand(16, generator=g, dtype=torch.float64)}
    errors, bounds = [], []
    for mean_inputs in (None, means):
        net, report = quantize(
            network, InputEncoding.uniform(1.0), channel_gains=False, mean_inputs=mean_inputs
        )
        proj, pop, lsb = net.projections[0], net.populations[0], report.layers[0].membrane_lsb
        w = proj.weight.double() * 2.0 ** (6 + proj.weight_exp) * lsb
        bias = pop.bias_mant.double() * 2.0 ** pop.bias_exp.double() * lsb
        errors.append((w @ rates + bias - weight @ rates) / lsb)  # in membrane LSBs
        bounds.append(2.0 ** pop.bias_exp.double() / 2)  # the bias's rounding: half its step
    uncorrected, corrected = errors
    assert (corrected.abs() <= bounds[1]).all()
    assert uncorrected.abs().max() > 50 * corrected.abs().max()
    assert report.layers[0].bias_correction_rms > 0 and report.layers[1].bias_correction_rms == 0


def test_bias_correction_holds_at_every_neuron_of_a_padded_conv() -> None:
    """Graded input held constant (so its mean is the input): the quantized network's first-step
    input current matches the float conv's at every neuron, zero-padded borders included."""
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) * 0.1
    bias = torch.randn(4, 1, 1, generator=g, dtype=torch.float64).expand(4, 5, 5) * 0.1
    theta = torch.full((4, 5, 5), 100.0, dtype=torch.float64)  # no spikes: v is the current
    pop = FloatPopulation("p", "subtract", (4, 5, 5), theta, torch.zeros(4, 5, 5), bias.clone())
    readout = FloatPopulation("r", "readout", (1,), torch.ones(1), torch.zeros(1), torch.zeros(1))
    network = FloatNetwork(
        inputs={"x": (2, 5, 5)},
        populations=[pop, readout],
        projections=[FloatProjection("x", "p", "conv", weight, padding=(1, 1)),
                     FloatProjection("p", "r", "dense", torch.ones(1, 100))],
        output="r",
    )  # fmt: skip
    encoding = InputEncoding.uniform(1 / 64)
    payload = torch.randint(-128, 128, (1, 2, 5, 5), generator=g)
    exact = F.conv2d(payload.double() / 64, weight, padding=1)[0] + bias
    errors = []
    for mean_inputs in (None, {"x": payload[0].double(), "p": torch.zeros(4, 5, 5)}):
        net, report = quantize(network, encoding, mean_inputs=mean_inputs)
        v = simulate(net, {"x": payload}, 1, record=True).traces["p"]["v"][0, 0].double()
        gain = torch.tensor(report.layers[0].channel_gains).reshape(4, 1, 1)
        lsb = report.layers[0].membrane_lsb
        errors.append((v * lsb / gain - exact) * gain / lsb)  # in the population's LSBs
    uncorrected, corrected = errors
    # the bias's rounding, plus under one LSB where a negative weight exponent shifts bits out
    assert (corrected.abs() < 2.0 ** net.populations[0].bias_exp / 2 + 1).all()
    assert uncorrected.abs().max() > 20 * corrected.abs().max()
