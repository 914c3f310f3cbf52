"""Batched fixed-point simulation of Loihi neuro-cores in PyTorch (CPU or GPU).

Every state variable is an int64 tensor and every update is integer arithmetic reproducing
lava-nc 0.10.0's bit-accurate process models (read from the sources):

* ``lava/proc/lif/models.py`` (``AbstractPyLifModelFixed``, ``PyLifModelBitAcc``)::

      u = wrap24(rtz(u * (4096 - (du + 1))) + (a_in << 6))   # one fold, exactly as Lava writes it
      v = clip(rtz(v * (4096 - dv)) + u + (bias_mant << bias_exp), -(2**23 - 1), 2**23 - 1)
      s = v > (vth << 6);  v[s] = 0                          # u is never reset
  with ``rtz(x) = sign(x) * (|x| >> 12)``.
* ``lava/proc/dense/models.py`` + ``lava/utils/weightutils.py``: weights clipped to 8 bits by sign
  mode, truncated to ``num_weight_bits``; ``a = (W s) << weight_exp`` (``>>`` when negative),
  emitted one step later.
* ``lava/proc/conv/models.py``: ``weight_exp`` ignored, output wrapped to signed 24 bits,
  emitted one step later.

``mode="lava"`` is exactly that. ``mode="loihi2"`` keeps the neuron datapath (with the
per-population settings the quantizer picks: reset by subtraction, 24-bit thresholds), delivers
synaptic input in the same step (the layer-synchronous schedule the converted SNN assumes), scales
every projection by ``2**(6 + weight_exp)`` and wraps dendritic sums to 24 bits. Saturation and
wrap-around are counted per population, never silent.

Matrix products run in floating point on integer values, which is exact while every partial sum
stays below 2**24 (float32) or 2**53 (float64); :func:`_exact_dtype` picks the type from a bound
computed on the weights, and TF32 is disabled during a run. Off the CPU, convolutions run as
patches times weights in one matrix product (:func:`conv2d_as_gemm`): cuDNN may pick Winograd or
FFT algorithms, whose intermediate values are not integers, so their results could be off by the
rounding error; a product of integers summed below those bounds is exact in any order. Everything
else is int64 arithmetic, exact on every device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection
from neurocuda.metrics.fanout import fan_out_map

SimMode = Literal["lava", "loihi2"]

UV_BITS = 24
MAX_UV = 2 ** (UV_BITS - 1)
DECAY_SHIFT = 12
DECAY_UNITY = 2**DECAY_SHIFT
ACT_SHIFT = 6


def rtz_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``sign(x) * (|x| >> shift)``: Lava's round-toward-zero scaling."""
    return torch.sign(x) * (x.abs() >> shift)


def wrap_signed(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap of ``x`` to ``bits`` bits."""
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half  # == remainder(x + half, 2**bits), 4x cheaper


def lava_wrap24(x: torch.Tensor) -> torch.Tensor:
    """Lava's current wrap: one fold by 2**24 (``x > 2**23`` or ``x <= -2**23``)."""
    wrapped = torch.where(x > MAX_UV, x - 2 * MAX_UV, x)
    return torch.where(wrapped <= -MAX_UV, x + 2 * MAX_UV, wrapped)


def lava_dense_weights(weight: torch.Tensor, num_weight_bits: int) -> torch.Tensor:
    """Lava Dense's first-step weight processing: clip to 8 bits by sign mode, then truncate."""
    w = weight.to(torch.int64)
    if bool((w >= 0).all()):
        lo, hi, sign, mixed = 0, 255, 1, 0
    elif bool((w <= 0).all()):
        lo, hi, sign, mixed = 0, 255, -1, 0
    else:
        lo, hi, sign, mixed = -256, 255, 1, 1
    w = (sign * w).clamp(lo, hi)
    drop = 8 - num_weight_bits + mixed
    return sign * ((w >> drop) << drop)


def _exact_dtype(weight: torch.Tensor, max_input: int) -> torch.dtype:
    """float32 when every partial sum of ``weight @ input`` is an integer below 2**24."""
    per_output = weight.abs().reshape(weight.shape[0], -1).sum(dim=1).max().item()
    return torch.float32 if per_output * max_input < 2**24 else torch.float64


def conv2d_as_gemm(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)`` as one batched matrix
    product of the input's patches with the weights: exact on integer values in any summation
    order (see the module docstring)."""
    b = x.shape[0]
    out_c, c_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = F.pad(x, (pw, pw, ph, ph))
    patches = padded.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    patches = patches[..., ::dh, ::dw]  # [B, C, H_out, W_out, kh, kw]
    h_out, w_out = patches.shape[2:4]
    patches = patches.reshape(b, groups, c_group, h_out, w_out, kh, kw)
    kernels = weight.reshape(groups, out_c // groups, c_group, kh, kw)
    out = torch.einsum("bgchwij,gocij->bgohw", patches, kernels)
    return out.reshape(b, out_c, h_out, w_out)


def convolves_as_gemm(device: torch.device) -> bool:
    """Whether convolutions on ``device`` run as :func:`conv2d_as_gemm`: everywhere but the CPU,
    whose ``F.conv2d`` the Lava cross-check and the pinned digests verified exact."""
    return device.type != "cpu"


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass
class PopulationCounters:
    """Per-population totals over a run (summed over the batch)."""

    spikes: int = 0
    synops: int = 0
    neuron_updates: int = 0
    current_wraps: int = 0
    voltage_clips: int = 0
    dendrite_wraps: int = 0


@dataclass
class SimResult:
    """What a simulation returns: the readout trace, counters and (optionally) full traces."""

    readout: torch.Tensor
    counters: dict[str, PopulationCounters]
    traces: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


_COUNTER_FIELDS = ("spikes", "synops", "current_wraps", "voltage_clips", "dendrite_wraps")


class _CompiledProjection:
    """A projection with device tensors, exact dtype and fan-out map prepared once."""

    def __init__(self, proj: Projection, mode: SimMode, source_shape: tuple[int, ...], device):
        self.proj = proj
        self.mode = mode
        weight = proj.weight.to(torch.int64)
        if mode == "lava" and proj.kind == "dense":
            weight = lava_dense_weights(weight, proj.num_weight_bits)
        self.source_shape = source_shape
        self.int_weight = weight.to(device)
        self.max_input = 2**15 if proj.graded else 1
        dtype = _exact_dtype(weight, self.max_input)
        if proj.graded:
            dtype = torch.float64
        self.weight = weight.to(device=device, dtype=dtype)
        self.conv_as_gemm = convolves_as_gemm(torch.device(device))
        self.fan_out = fan_out_map(
            proj.kind,
            tuple(proj.weight.shape),
            source_shape,
            proj.stride,
            proj.padding,
            proj.dilation,
            proj.groups,
            device,
        )

    def apply(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer synaptic input for ``source`` (``[B, *source_shape]``) and its wrap count."""
        p = self.proj
        x = source.to(self.weight.dtype)
        if p.kind == "dense":
            acc = x.reshape(x.shape[0], -1) @ self.weight.T
        elif self.conv_as_gemm:
            acc = conv2d_as_gemm(x, self.weight, p.stride, p.padding, p.dilation, p.groups)
        else:
            acc = F.conv2d(x, self.weight, None, p.stride, p.padding, p.dilation, p.groups)
        acc = acc.round().to(torch.int64)
        if self.mode == "lava" and p.kind == "conv":
            wrapped = wrap_signed(acc, UV_BITS)
            return wrapped, (wrapped != acc).sum()
        # Lava shifts the sum by weight_exp (and the neuron shifts it by 6 more); Loihi scales each
        # weight by 2**(6 + weight_exp) (NxSDK's documented effective weight), keeping those 6
        # fractional bits: loihi2 mode shifts once by 6 + weight_exp and its neurons by 0.
        shift = p.weight_exp if self.mode == "lava" else p.weight_exp + ACT_SHIFT
        shifted = acc << shift if shift > 0 else acc >> -shift
        # Lava's a_out is an int32 array; Loihi's dendritic accumulator is 24 bits
        wrapped = wrap_signed(shifted, 32 if self.mode == "lava" else UV_BITS)
        return wrapped, (wrapped != shifted).sum()


class _PopulationState:
    """Integer state of one population for a batch."""

    def __init__(self, pop: Population, batch: int, device) -> None:
        self.pop = pop
        full = (batch, *pop.shape)
        self.u = torch.zeros(full, dtype=torch.int64, device=device)
        self.v = pop.v_init.to(device=device, dtype=torch.int64).expand(full).clone()
        self.s = torch.zeros(full, dtype=torch.int64, device=device)
        self.bias = _effective_bias(pop).to(device)
        self.vth = (pop.vth.to(torch.int64) << pop.vth_shift).to(device)
        amount = pop.reset_amount if pop.reset_amount is not None else pop.vth
        self.reset_amount = amount.to(device=device, dtype=torch.int64)

    def step(self, a_in: torch.Tensor, counters: dict[str, torch.Tensor]) -> None:
        """One Loihi neuron update with synaptic input ``a_in``."""
        pop = self.pop
        # du = 4095 multiplies by 0 and dv = 0 by 4096 >> 12: exact shortcuts for IF neurons
        if pop.du + 1 == DECAY_UNITY:
            decayed_u = torch.zeros_like(self.u)
        else:
            decayed_u = rtz_shift(self.u * (DECAY_UNITY - (pop.du + 1)), DECAY_SHIFT)
        current = decayed_u + wrap_signed(a_in << pop.act_shift, 32)
        self.u = lava_wrap24(current)
        counters["current_wraps"] += (self.u != current).sum()
        if pop.dv == 0:
            decayed_v = self.v
        else:
            decayed_v = rtz_shift(self.v * (DECAY_UNITY - pop.dv), DECAY_SHIFT)
        voltage = decayed_v + self.u + self.bias
        self.v = voltage.clamp(-(MAX_UV - 1), MAX_UV - 1)
        counters["voltage_clips"] += (self.v != voltage).sum()
        if not pop.spiking:
            return
        fired = self.v > self.vth
        self.s = fired.to(torch.int64)
        if pop.reset == "zero":
            self.v = torch.where(fired, torch.zeros_like(self.v), self.v)
        else:
            self.v = self.v - self.s * self.reset_amount
        counters["spikes"] += self.s.sum()


def _effective_bias(pop: Population) -> torch.Tensor:
    mant, exp = pop.bias_mant.to(torch.int64), pop.bias_exp.to(torch.int64)
    return torch.where(exp >= 0, mant << exp.clamp(min=0), mant >> (-exp).clamp(min=0))


def _input_at(inputs: dict[str, torch.Tensor], name: str, t: int, shape) -> torch.Tensor:
    x = inputs[name]
    if x.dim() == len(shape) + 1:
        return x
    return x[t] if t < x.shape[0] else torch.zeros_like(x[0])


def simulate(
    network: IntNetwork,
    inputs: dict[str, torch.Tensor],
    steps: int,
    mode: SimMode = "loihi2",
    record: bool = False,
) -> SimResult:
    """Run ``network`` for ``steps`` steps on integer ``inputs``.

    ``inputs[name]``: ``[B, *shape]`` (held constant at every step) or ``[T, B, *shape]`` (zero
    after ``T``). Returns the readout's voltage trace ``[steps, B, *shape]`` and counters.
    """
    if mode not in ("lava", "loihi2"):
        raise ValueError(f"Unknown simulator mode {mode!r}; use 'loihi2' or 'lava'.")
    first = next(iter(inputs.values()))
    device = first.device
    shapes = dict(network.inputs)
    shapes.update({p.name: p.shape for p in network.populations})
    sample = _input_at(inputs, next(iter(inputs)), 0, shapes[next(iter(inputs))])
    batch = sample.shape[0]
    states = {p.name: _PopulationState(p, batch, device) for p in network.populations}
    projections = {
        pop.name: [
            _CompiledProjection(pr, mode, shapes[pr.source], device)
            for pr in network.incoming(pop.name)
        ]
        for pop in network.populations
    }
    # Device-side tallies, read once at the end (no host sync per step).
    tally = {
        p.name: {f: torch.zeros((), dtype=torch.int64, device=device) for f in _COUNTER_FIELDS}
        for p in network.populations
    }
    readout = []
    traces: dict[str, dict[str, list[torch.Tensor]]] = {
        p.name: {"u": [], "v": [], "s": []} for p in network.populations
    }
    # Lava: each synapse process emits what it received one step earlier (a_buff, 0 at t=0).
    pending = {
        p.name: torch.zeros((batch, *p.shape), dtype=torch.int64, device=device)
        for p in network.populations
    }
    with _no_tf32(), torch.no_grad():
        for t in range(steps):
            outputs = {n: _input_at(inputs, n, t, shapes[n]) for n in network.inputs}
            for pop in network.populations:
                a_in = torch.zeros((batch, *pop.shape), dtype=torch.int64, device=device)
                for proj in projections[pop.name]:
                    src = proj.proj.source
                    signal = outputs[src] if src in network.inputs else states[src].s
                    contribution, wraps = proj.apply(signal)
                    a_in = a_in + contribution.reshape(a_in.shape)
                    tally[pop.name]["dendrite_wraps"] += wraps
                    if src not in network.inputs:
                        tally[src]["synops"] += (signal * proj.fan_out).sum()
                if mode == "lava":
                    a_in, pending[pop.name] = pending[pop.name], a_in
                states[pop.name].step(a_in, tally[pop.name])
                if record:
                    for key in ("u", "v", "s"):
                        traces[pop.name][key].append(getattr(states[pop.name], key).clone())
            readout.append(states[network.output].v.clone())
    stacked = (
        {n: {k: torch.stack(v) for k, v in d.items()} for n, d in traces.items()} if record else {}
    )
    counters = {
        name: PopulationCounters(
            **{k: int(v) for k, v in fields.items()},
            neuron_updates=steps * batch * int(torch.Size(shapes[name]).numel()),
        )
        for name, fields in tally.items()
    }
    return SimResult(readout=torch.stack(readout), counters=counters, traces=stacked)
