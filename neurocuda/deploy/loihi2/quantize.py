"""Float network -> Loihi integers: 8-bit weight mantissas with a shared exponent per projection.

Units: population ``l`` has a membrane LSB of ``q_l`` (float per integer unit); one weight
mantissa unit of a projection with exponent ``e`` is worth ``2**(6 + e) * q_l`` (Loihi's effective
weight ``m * 2**(6 + e)``). Per population:

0. Channel gains: an IF neuron's spikes do not change when its incoming weights, threshold, bias
   and initial membrane are all multiplied by the same factor. Each output channel gets the
   power-of-two gain ``g_k`` that brings its largest weight closest to (not above) the
   projection's largest, so every channel uses the whole 8-bit mantissa range instead of only the
   channel with the largest weights (BN folding spreads channel scales by 10x and more). Readout
   voltages are divided by their gains again (:attr:`LayerQuantization.output_scale`).
1. ``q_l``, a power of two, puts the largest threshold at most at ``2**(23 - headroom_bits)``
   membrane units (readouts: the largest possible per-step input at
   ``2**(23 - readout_headroom_bits)``), and no lower than needed for the largest bias to fit
   Loihi's 13-bit mantissa with a 3-bit exponent.
2. For every incoming projection the exponent ``e`` (``[-8, 7]``) and the mantissas
   (``[-128, 127]``) are the pair, among the two finest exponents that cover the weights, with the
   least squared error (a finer exponent may clip a few outliers); clipped weights are counted.
3. Thresholds, initial membranes, reset amounts and biases are divided by ``q_l`` and rounded.

``mode="lava"``: thresholds are 17-bit and shifted by 6, reset is to zero, Conv has no exponent
(``e = 0`` forces ``q_l``), Dense stores ``2 * m`` (Lava truncates mixed-sign weights to even
values) with exponent ``e - 1``. ``mode="loihi2"``: 24-bit thresholds, reset by subtraction where
the graph says so. Graded input (the image) is sent as signed 8-bit payloads of an
:class:`~neurocuda.deploy.loihi2.encoding.InputEncoding`: its per-channel scale is folded into
the weights of the projections leaving the input, its offset into the receiving neurons' biases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from neurocuda.deploy.loihi2.encoding import PAYLOAD_MIN, InputEncoding
from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection
from neurocuda.deploy.loihi2.simulator import SimMode
from neurocuda.deploy.network import FloatNetwork, FloatPopulation, FloatProjection

WEIGHT_EXP_RANGE = (-8, 7)  # Loihi's shared weight exponent (lava Dense ``weight_exp``)
MANTISSA_RANGE = (-128, 127)  # 8-bit signed synaptic weight mantissa
BIAS_MANT_MAX = 4095  # 13-bit signed bias mantissa (lava LIF ``bias_mant``, precision 13)
BIAS_EXP_MAX = 7  # 3-bit bias exponent (lava LIF ``bias_exp``, precision 3)
VTH_MAX_LAVA = 2**17 - 1  # 17-bit threshold mantissa (lava PyLifModelBitAcc ``vth``)
V_MAX = 2**23 - 1  # 24-bit signed membrane


@dataclass
class LayerQuantization:
    """What quantizing one population did; all counts are of values that did not fit."""

    name: str
    membrane_lsb: float
    weight_exps: list[int]
    weight_rel_error: float
    channel_gains: list[float] = field(default_factory=list)
    clipped_weights: int = 0
    clipped_biases: int = 0
    clipped_thresholds: int = 0


@dataclass
class QuantizationReport:
    """Per-layer quantization summary plus the input payload scale."""

    input_encoding: dict
    layers: list[LayerQuantization] = field(default_factory=list)

    def saturations(self) -> int:
        """Total number of values clipped to fit Loihi's widths."""
        return sum(q.clipped_weights + q.clipped_biases + q.clipped_thresholds for q in self.layers)

    def as_dict(self) -> dict:
        return asdict(self)

    def output_scale(self) -> torch.Tensor:
        """Float value of one integer membrane unit of the readout, per output channel."""
        readout = self.layers[-1]
        return readout.membrane_lsb / torch.tensor(readout.channel_gains, dtype=torch.float64)


def _fold_encoding(
    proj: FloatProjection, input_shape: tuple[int, ...], encoding: InputEncoding
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights on payloads (``w * scale``) and the offset's input to every target neuron."""
    w = proj.weight.to(torch.float64)
    dims = len(input_shape)
    offset = encoding.per_channel(encoding.offset, dims).to(torch.float64).expand(input_shape)
    if proj.kind == "dense":
        scale = encoding.per_channel(encoding.scale, dims).to(torch.float64).expand(input_shape)
        return w * scale.reshape(1, -1), w @ offset.reshape(-1)
    # conv: output channel o of group g reads input channels g * Ci_g ... (g + 1) * Ci_g - 1
    out_channels, in_per_group = w.shape[:2]
    group = torch.arange(out_channels) // (out_channels // proj.groups)
    channel = group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    scale = encoding.scale.to(torch.float64).expand(input_shape[0])[channel]
    # the offset goes through the same convolution, zero padding included: border neurons get
    # their own (smaller) offset input, which Loihi's per-neuron biases hold exactly
    through = F.conv2d(offset[None], w, None, proj.stride, proj.padding, proj.dilation, proj.groups)
    return w * scale[:, :, None, None], through[0]


def _channel_gains(weights: list[torch.Tensor]) -> torch.Tensor:
    """Per output channel, the largest power of two keeping every projection's channel maximum
    at or below that projection's overall maximum (1 for channels without weights)."""
    channels = weights[0].shape[0]
    fill = torch.zeros(channels, dtype=torch.float64)
    for w in weights:
        per_channel = w.abs().reshape(channels, -1).amax(dim=1).to(torch.float64)
        peak = per_channel.max()
        if peak > 0:
            fill = torch.maximum(fill, per_channel / peak)
    gains = torch.ones(channels, dtype=torch.float64)
    used = fill > 0
    gains[used] = 2.0 ** torch.floor(-torch.log2(fill[used]))
    return gains


def _apply_gains(
    pop: FloatPopulation, weights: list[torch.Tensor], gains: torch.Tensor
) -> tuple[FloatPopulation, list[torch.Tensor]]:
    """``pop`` and its incoming ``weights`` with output channel ``k`` multiplied by ``gains[k]``."""
    per_neuron = gains.reshape(-1, *([1] * (len(pop.shape) - 1))).to(pop.theta.dtype)
    scaled_pop = replace(
        pop,
        theta=pop.theta * per_neuron,
        v_init=pop.v_init * per_neuron,
        bias=pop.bias * per_neuron,
    )
    scaled = [w * gains.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype) for w in weights]
    return scaled_pop, scaled


def _quantize_weights(w: torch.Tensor, unit: float, exp_hint: int) -> tuple[torch.Tensor, int, int]:
    """Mantissas and exponent with ``w ~ m * 2**e * unit``: the better of two exponents."""
    lo, hi = WEIGHT_EXP_RANGE
    best = None
    for e in (exp_hint, exp_hint - 1):
        e = min(max(e, lo), hi)
        scaled = w / (unit * 2.0**e)
        m = scaled.round().clamp(*MANTISSA_RANGE)
        err = float(((m - scaled) ** 2).sum()) * 4.0**e
        clipped = int(
            ((scaled.round() < MANTISSA_RANGE[0]) | (scaled.round() > MANTISSA_RANGE[1])).sum()
        )
        if best is None or err < best[0]:
            best = (err, m.to(torch.int64), e, clipped)
    _, m, e, clipped = best
    return m, e, clipped


def _exp_needed(max_abs: float, unit: float) -> int:
    """Smallest exponent with ``max_abs / (unit * 2**e) <= 127``."""
    if max_abs == 0.0:
        return WEIGHT_EXP_RANGE[0]
    return math.ceil(math.log2(max_abs / (unit * MANTISSA_RANGE[1])))


def _bias(bias_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Split integer biases into 13-bit mantissas and 3-bit exponents; count clipped ones."""
    mag = bias_int.abs().to(torch.float64)
    exp = torch.ceil(torch.log2(torch.clamp(mag / BIAS_MANT_MAX, min=1.0))).to(torch.int64)
    clipped = int((exp > BIAS_EXP_MAX).sum())
    exp = exp.clamp(0, BIAS_EXP_MAX)
    mant = torch.round(bias_int.to(torch.float64) / 2.0**exp).clamp(
        -BIAS_MANT_MAX - 1, BIAS_MANT_MAX
    )
    return mant.to(torch.int64), exp, clipped


def _per_step_bound(
    pop: FloatPopulation, weights: list[tuple[FloatProjection, torch.Tensor, bool]]
) -> float:
    """Largest possible per-step input current of any neuron (inputs at their largest payload)."""
    total = pop.bias.abs().reshape(-1).clone()
    for p, scaled, graded in weights:
        w = scaled.abs()
        zmax = -PAYLOAD_MIN if graded else 1.0
        if p.kind == "dense":
            total = total + (w.sum(dim=1) * zmax).reshape(-1)[: total.numel()]
        else:
            per_channel = w.reshape(w.shape[0], -1).sum(dim=1) * zmax
            total = total + per_channel.repeat_interleave(total.numel() // w.shape[0])
    return float(total.max())


def quantize(
    network: FloatNetwork,
    encoding: InputEncoding,
    mode: SimMode = "loihi2",
    headroom_bits: int = 6,
    readout_headroom_bits: int = 8,
    channel_gains: bool = True,
) -> tuple[IntNetwork, QuantizationReport]:
    """Quantize ``network`` for graded inputs sent as ``encoding``'s payloads."""
    report = QuantizationReport(input_encoding=encoding.as_dict())
    populations, projections = [], []
    for pop in network.populations:
        incoming = network.incoming(pop.name)
        graded = [p.source in network.inputs for p in incoming]
        weights = [p.weight for p in incoming]
        for i, p in enumerate(incoming):
            if graded[i]:
                weights[i], offset_input = _fold_encoding(p, network.inputs[p.source], encoding)
                pop = replace(pop, bias=pop.bias + offset_input.reshape(pop.shape))
        gains = _channel_gains(weights) if channel_gains and weights else None
        if gains is not None:
            pop, weights = _apply_gains(pop, weights, gains)
        if pop.kind == "readout":
            ref = _per_step_bound(pop, list(zip(incoming, weights, graded, strict=True))) / 2.0 ** (
                23 - readout_headroom_bits
            )
        else:
            ref = float(pop.theta.max()) / 2.0 ** (23 - headroom_bits)
        lsb = _power_of_two(
            max(ref, float(pop.bias.abs().max()) / (BIAS_MANT_MAX * 2**BIAS_EXP_MAX), 1e-30)
        )
        for p, w in zip(incoming, weights, strict=True):
            needed = _exp_needed(float(w.abs().max()), lsb * 64)
            if mode == "lava" and p.kind == "conv":
                needed = max(needed, 0)
                lsb = max(lsb, float(w.abs().max()) / (64 * MANTISSA_RANGE[1]))
            elif needed > WEIGHT_EXP_RANGE[1]:
                lsb *= 2.0 ** (needed - WEIGHT_EXP_RANGE[1])
        if mode == "lava":
            lsb = max(lsb, float(pop.theta.max()) / (64 * VTH_MAX_LAVA))
        lsb = _power_of_two(lsb)
        layer = LayerQuantization(pop.label or pop.name, lsb, [], 0.0)
        layer.channel_gains = gains.tolist() if gains is not None else [1.0] * pop.shape[0]
        err_num = err_den = 0.0
        for p, w, g in zip(incoming, weights, graded, strict=True):
            hint = _exp_needed(float(w.abs().max()), lsb * 64)
            if mode == "lava" and p.kind == "conv":
                m, clipped = _conv_mantissas(w, lsb * 64)
                e, stored, stored_exp = 0, m, 0
            else:
                m, e, clipped = _quantize_weights(w, lsb * 64, hint)
                stored, stored_exp = (2 * m, e - 1) if mode == "lava" else (m, e)
            err_num += float(((m * 2.0**e * lsb * 64 - w) ** 2).sum())
            err_den += float((w**2).sum())
            layer.clipped_weights += clipped
            layer.weight_exps.append(e)
            projections.append(
                Projection(
                    source=p.source,
                    target=p.target,
                    kind=p.kind,
                    weight=stored,
                    weight_exp=stored_exp,
                    stride=p.stride,
                    padding=p.padding,
                    dilation=p.dilation,
                    groups=p.groups,
                    graded=g,
                )
            )
        layer.weight_rel_error = math.sqrt(err_num / err_den) if err_den else 0.0
        populations.append(_population(pop, lsb, mode, layer))
        report.layers.append(layer)
    net = IntNetwork(
        inputs=dict(network.inputs),
        populations=populations,
        projections=projections,
        output=network.output,
    )
    return net, report


def _power_of_two(value: float) -> float:
    """The smallest power of two >= ``value``: dyadic weights and thresholds then map exactly."""
    return 2.0 ** math.ceil(math.log2(value))


def _conv_mantissas(w: torch.Tensor, unit: float) -> tuple[torch.Tensor, int]:
    scaled = (w / unit).round()
    clipped = int(((scaled < MANTISSA_RANGE[0]) | (scaled > MANTISSA_RANGE[1])).sum())
    return scaled.clamp(*MANTISSA_RANGE).to(torch.int64), clipped


def _population(
    pop: FloatPopulation, lsb: float, mode: SimMode, layer: LayerQuantization
) -> Population:
    bias_int = torch.round(pop.bias / lsb).to(torch.int64)
    mant, exp, clipped_bias = _bias(bias_int)
    layer.clipped_biases += clipped_bias
    v_init = torch.round(pop.v_init / lsb).clamp(-V_MAX, V_MAX).to(torch.int64)
    spiking = pop.kind != "readout"
    if mode == "lava":
        vth_raw = torch.round(pop.theta / (64 * lsb))
        vth = vth_raw.clamp(0, VTH_MAX_LAVA).to(torch.int64)
        layer.clipped_thresholds += int((vth != vth_raw).sum()) if spiking else 0
        return Population(
            pop.name, pop.shape, vth, mant, exp, v_init, vth_shift=6, reset="zero", spiking=spiking
        )
    vth_raw = torch.round(pop.theta / lsb)
    vth = vth_raw.clamp(0, V_MAX).to(torch.int64)
    layer.clipped_thresholds += int((vth != vth_raw).sum()) if spiking else 0
    reset = "subtract" if pop.kind == "subtract" else "zero"
    return Population(
        pop.name,
        pop.shape,
        vth,
        mant,
        exp,
        v_init,
        vth_shift=0,
        act_shift=0,
        reset=reset,
        reset_amount=vth if reset == "subtract" else None,
        spiking=spiking,
    )
