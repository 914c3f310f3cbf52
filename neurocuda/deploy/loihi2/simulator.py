"""Batched fixed-point simulation of Loihi neuro-cores in PyTorch (CPU or GPU).

Every update reproduces, integer for integer, lava-nc 0.10.0's bit-accurate process models (read
from the sources):

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

Schedule (the float runtime's, docs/semantics.md "Batching"): the network is feed-forward, so it
runs population by population, each over all steps: the synaptic input of a population for every
step comes from one convolution (or matrix product) on the stacked spikes of its sources, the
input ports' once when they are constant, and only the neuron update loops over time. On CPU the
batch runs in the float runtime's passes (:func:`~neurocuda.snn.chunking.sub_batch_size`).

Arithmetic: matrix products run in floating point on integer values, exact while every partial
sum is an integer below 2**24 (float32) or 2**53 (float64); the type is chosen from a bound on the
weights and the largest input, and TF32 is disabled during a run. A projection after an average
pool that the quantizer folded into its kernel (kernel constant on ``p x p`` blocks, stride and
padding multiples of ``p``) runs as the integer window sum followed by the small kernel: the same
integers, a quarter of the multiplications. Integer-and-fire populations (``du = 4095``,
``dv = 0``) in ``loihi2`` mode keep their state in float32, which holds every integer below 2**24
exactly; the bounds that make this exact (input and membrane ranges) are checked per population
and pass of the batch, and anything else (decays, ``lava`` mode, a wrap or a clip the bounds do not
rule out) runs the step-by-step int64 datapath. Saturation counters are tallied from range checks
on whole stacked tensors; a membrane range check runs only at steps where interval bounds carried
from the inputs' ranges do not exclude a clip.

Off the CPU, convolutions run as patches times weights in one matrix product
(:func:`conv2d_as_gemm`): cuDNN may pick Winograd or FFT algorithms, whose intermediate values are
not integers; a product of integers summed below those bounds is exact in any order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection
from neurocuda.metrics.fanout import fan_out_map
from neurocuda.snn.chunking import sub_batch_size

SimMode = Literal["lava", "loihi2"]

UV_BITS = 24
MAX_UV = 2 ** (UV_BITS - 1)
MAX_V = MAX_UV - 1
DECAY_SHIFT = 12
DECAY_UNITY = 2**DECAY_SHIFT
ACT_SHIFT = 6
FLOAT32_EXACT = 2**24
"""float32 holds every integer of magnitude up to 2**24 exactly."""
FLOAT64_EXACT = 2**53


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


def _conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _phase(name: str) -> record_function:
    """A ``torch.profiler`` label (scripts/benchmark_deploy.py ``--sections profile``)."""
    return record_function(f"loihi2.{name}")


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


def _pool_factor(proj: Projection, source_shape: tuple[int, ...]) -> tuple[int, int]:
    """The largest ``(ph, pw)`` such that ``proj``'s conv equals a ``ph x pw`` window sum followed
    by the kernel's ``[::ph, ::pw]`` at stride and padding divided by ``(ph, pw)``: kernel constant
    on ``ph x pw`` blocks, stride, padding and source size multiples of them, no dilation."""
    if proj.kind != "conv" or tuple(proj.dilation) != (1, 1):
        return 1, 1
    w = proj.weight
    kh, kw = w.shape[-2:]
    h, wd = source_shape[-2:]
    sh, sw = proj.stride
    pad_h, pad_w = proj.padding
    candidates = sorted(
        (
            (ph, pw)
            for ph in range(1, kh + 1)
            for pw in range(1, kw + 1)
            if not (kh % ph or sh % ph or pad_h % ph or h % ph)
            and not (kw % pw or sw % pw or pad_w % pw or wd % pw)
        ),
        key=lambda p: -p[0] * p[1],
    )
    for ph, pw in candidates:
        blocks = w.reshape(*w.shape[:2], kh // ph, ph, kw // pw, pw)
        if bool((blocks == blocks[:, :, :, :1, :, :1]).all()):
            return ph, pw
    return 1, 1


class _Synapses:
    """A projection with its weights, fan-out map and window-sum factorization prepared once."""

    def __init__(self, proj: Projection, mode: SimMode, source_shape: tuple[int, ...], device):
        self.proj = proj
        self.mode = mode
        weight = proj.weight.to(torch.int64)
        if mode == "lava" and proj.kind == "dense":
            weight = lava_dense_weights(weight, proj.num_weight_bits)
        self.weight_sum = int(weight.abs().reshape(weight.shape[0], -1).sum(dim=1).max())
        """Largest sum of |weights| into one neuron: with inputs up to m, every partial sum of a
        product is at most ``weight_sum * m`` in magnitude."""
        self.pool = _pool_factor(proj, source_shape)
        ph, pw = self.pool
        if proj.kind == "conv":
            weight = weight[:, :, ::ph, ::pw]
            self.stride = (proj.stride[0] // ph, proj.stride[1] // pw)
            self.padding = (proj.padding[0] // ph, proj.padding[1] // pw)
        self.int_weight = weight.to(device)
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
        if mode == "lava":
            self.shift = 0 if proj.kind == "conv" else proj.weight_exp
            self.wrap_bits = UV_BITS if proj.kind == "conv" else 32
        else:
            # Lava shifts the sum by weight_exp (and the neuron shifts it by 6 more); Loihi scales
            # each weight by 2**(6 + weight_exp) (NxSDK's documented effective weight), keeping
            # those 6 fractional bits: loihi2 mode shifts once by 6 + weight_exp, neurons by 0.
            self.shift = proj.weight_exp + ACT_SHIFT
            self.wrap_bits = UV_BITS
        self._weights: dict[tuple[torch.dtype, bool], torch.Tensor] = {}

    def dtype(self, max_input: int) -> torch.dtype:
        """float32 when every partial sum is an integer below 2**24, else float64."""
        bound = self.weight_sum * max_input
        if bound >= FLOAT64_EXACT:
            raise ValueError(
                f"Projection {self.proj.source}->{self.proj.target}: partial sums up to {bound} "
                "exceed 2**53, which no float type holds exactly; inputs or weights are too large."
            )
        return torch.float32 if bound < FLOAT32_EXACT else torch.float64

    def _weight(self, dtype: torch.dtype, shifted: bool) -> torch.Tensor:
        """The weights as ``dtype``, times ``2**shift`` when ``shifted`` (a power of two keeps
        every partial sum exact)."""
        key = (dtype, shifted)
        if key not in self._weights:
            scale = 2.0**self.shift if shifted else 1.0
            self._weights[key] = self.int_weight.to(dtype) * scale
        return self._weights[key]

    def product(self, x: torch.Tensor, max_input: int, shifted: bool) -> torch.Tensor:
        """``W x`` (``x``: ``[N, *source_shape]``) in the exact float type; with ``shifted``,
        ``floor(W x * 2**shift)``: Loihi's shift, as arithmetic shifts round."""
        p = self.proj
        dtype = self.dtype(max_input)
        w = self._weight(dtype, shifted)
        with _phase("matmul/conv"):
            x = x.to(dtype)
            if p.kind == "dense":
                acc = x.reshape(x.shape[0], -1) @ w.T
            else:
                if self.pool != (1, 1):
                    x = F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)
                conv = conv2d_as_gemm if self.conv_as_gemm else _conv2d
                acc = conv(x, w, self.stride, self.padding, p.dilation, p.groups)
        if shifted and self.shift < 0:
            acc = acc.floor_()
        return acc

    def apply_int(self, x: torch.Tensor, max_input: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer synaptic input (int64) for ``x`` and how many values wrapped (the reference
        datapath: shift and wrap as Lava / Loihi do)."""
        acc = self.product(x, max_input, shifted=False).round().to(torch.int64)
        if self.mode == "lava" and self.proj.kind == "conv":
            wrapped = wrap_signed(acc, UV_BITS)
            return wrapped, (wrapped != acc).sum()
        shifted = acc << self.shift if self.shift > 0 else acc >> -self.shift
        # Lava's a_out is an int32 array; Loihi's dendritic accumulator is 24 bits
        wrapped = wrap_signed(shifted, self.wrap_bits)
        return wrapped, (wrapped != shifted).sum()


@dataclass
class _Value:
    """A population's (or input port's) output for one pass: ``[steps, b, ...]``, or ``[b, ...]``
    when the same at every step; float, integer-valued, entries at most ``max_abs``."""

    tensor: torch.Tensor
    constant: bool
    max_abs: int

    def samples(self) -> torch.Tensor:
        """The tensor as one batch of samples: ``[b, ...]`` or ``[steps * b, ...]``."""
        t = self.tensor
        return t if self.constant else t.reshape(-1, *t.shape[2:])


class _Population:
    """A population's constants on the device and its run over all steps of one pass."""

    def __init__(self, pop: Population, synapses: list[_Synapses], mode: SimMode, device):
        self.pop = pop
        self.synapses = synapses
        self.mode = mode
        self.bias = _effective_bias(pop).to(device)
        self.v_init = pop.v_init.to(device=device, dtype=torch.int64)
        self.vth = (pop.vth.to(torch.int64) << pop.vth_shift).to(device)
        amount = pop.reset_amount if pop.reset_amount is not None else pop.vth
        self.reset_amount = amount.to(device=device, dtype=torch.int64).expand(pop.shape)
        self.integrate_and_fire = (
            mode == "loihi2"
            and pop.du + 1 == DECAY_UNITY
            and pop.dv == 0
            and pop.act_shift == 0
            and bool(synapses)
            and int(self.bias.abs().max()) < MAX_UV
            and int(self.v_init.abs().max()) <= MAX_V
            and int(self.vth.min()) >= 0
            and int(self.vth.max()) <= MAX_V
            and int(self.reset_amount.min()) >= 0
            and int(self.reset_amount.max()) <= MAX_V
        )
        """Float32 state is exact for this population (subject to the per-pass input checks)."""
        if self.integrate_and_fire:
            dense = {"dtype": torch.float32, "device": device}
            self.bias_f = self.bias.to(**dense)
            self.v_init_f = self.v_init.to(**dense)
            self.vth_f = self.vth.to(**dense)
            self.neg_reset_f = (-self.reset_amount).to(**dense)
            self.bias_range = (int(self.bias.min()), int(self.bias.max()))
            self.v_init_range = (int(self.v_init.min()), int(self.v_init.max()))
            self.vth_max = int(self.vth.max())
            self.reset_min = int(self.reset_amount.min())
            self.post_reset_min = int((self.vth - self.reset_amount).min()) + 1

    def run(
        self, sources: list[_Value], steps: int, batch: int, tally: dict, record: bool, keep_v: bool
    ) -> dict[str, torch.Tensor]:
        """Run all steps; return ``s`` (float32 spikes ``[steps, b, ...]``), ``v`` with
        ``keep_v`` or ``record`` and ``u`` with ``record`` (int64 traces)."""
        if self.integrate_and_fire:
            out = self._run_float(sources, steps, batch, tally, record, keep_v)
            if out is not None:
                return out
        return self._run_int(sources, steps, batch, tally, record)

    def _run_float(
        self,
        sources: list[_Value],
        steps: int,
        batch: int,
        tally: dict,
        record: bool,
        keep_v: bool,
    ) -> dict[str, torch.Tensor] | None:
        """The IF datapath on float32 state; ``None`` when a range check cannot prove it exact
        (then nothing has been counted and the int64 datapath runs)."""
        parts, lo, hi, reach = [], 0, 0, 0
        with _phase("synaptic input"):
            for syn, value in zip(self.synapses, sources, strict=True):
                x = value.samples()
                acc = syn.product(x, value.max_abs, shifted=True)
                a_lo, a_hi = (int(v) for v in torch.aminmax(acc))
                if a_lo < -MAX_UV or a_hi > MAX_UV - 1:  # a 24-bit dendritic wrap
                    return None
                lo, hi, reach = lo + a_lo, hi + a_hi, reach + max(-a_lo, a_hi)
                acc = acc.reshape(-1 if value.constant else steps, batch, *self.pop.shape)
                acc = acc[0] if value.constant else acc
                parts.append((acc.float(), value.constant))
            # the 32-bit wrap and Lava's one-fold 24-bit current wrap change nothing in this range
            if reach > FLOAT32_EXACT or lo <= -MAX_UV or hi > MAX_UV:
                return None
            constant = all(c for _, c in parts)
            # a varying part first, so that constant ones broadcast into it (all fresh tensors)
            parts.sort(key=lambda part: part[1])
            current = parts[0][0]
            for t, _ in parts[1:]:
                current.add_(t)  # partial sums below `reach` <= 2**24: exact
            u_trace = current.clone() if record else None
            drive = current.add_(self.bias_f)  # u + bias: |u| <= 2**23, |bias| < 2**23: exact
            d_lo, d_hi = lo + self.bias_range[0], hi + self.bias_range[1]
            if max(-d_lo, d_hi) > MAX_UV + 1:  # |v + drive| could pass 2**24
                return None
        full = (batch, *self.pop.shape)
        v = self.v_init_f.expand(full).clone()
        spiking = self.pop.spiking
        spikes = torch.zeros((steps, *full), dtype=torch.float32, device=v.device)
        keep_v = keep_v or record
        v_trace = torch.empty_like(spikes) if keep_v else None
        clips = None
        post_lo, post_hi = self.v_init_range
        with _phase("neuron state update"):
            for t in range(steps):
                v.add_(drive if constant else drive[t])
                pre_lo, pre_hi = post_lo + d_lo, post_hi + d_hi
                if pre_lo < -MAX_V or pre_hi > MAX_V:
                    with _phase("saturation counting"):
                        pre_lo, pre_hi = (int(x) for x in torch.aminmax(v))
                        if pre_lo < -MAX_V or pre_hi > MAX_V:
                            clipped = (v.abs() > MAX_V).sum()
                            clips = clipped if clips is None else clips + clipped
                            v.clamp_(-MAX_V, MAX_V)
                            pre_lo, pre_hi = max(pre_lo, -MAX_V), min(pre_hi, MAX_V)
                post_lo, post_hi = pre_lo, pre_hi
                if spiking:
                    s = torch.gt(v, self.vth_f, out=spikes[t])
                    if self.pop.reset == "zero":
                        v.addcmul_(s, v, value=-1)  # v - v = 0 where fired
                        post_lo, post_hi = min(pre_lo, 0), max(min(pre_hi, self.vth_max), 0)
                    else:
                        v.addcmul_(s, self.neg_reset_f)
                        post_lo = min(pre_lo, self.post_reset_min)
                        post_hi = max(min(pre_hi, self.vth_max), pre_hi - self.reset_min)
                if keep_v:
                    v_trace[t].copy_(v)
        if clips is not None:
            tally["voltage_clips"] += clips
        out = {"s": spikes}
        if keep_v:
            out["v"] = v_trace.to(torch.int64)
        if record:
            u = u_trace.expand(steps, *full) if constant else u_trace
            out["u"] = u.to(torch.int64)
        return out

    def _run_int(
        self, sources: list[_Value], steps: int, batch: int, tally: dict, record: bool
    ) -> dict[str, torch.Tensor]:
        """The reference datapath: int64 state, every wrap and clip applied and counted."""
        pop = self.pop
        full = (batch, *pop.shape)
        device = self.bias.device
        a_in = torch.zeros((steps, *full), dtype=torch.int64, device=device)
        with _phase("synaptic input"):
            for syn, value in zip(self.synapses, sources, strict=True):
                x = value.samples()
                contribution, wraps = syn.apply_int(x, value.max_abs)
                # a constant input is sent, and wraps, at every step
                tally["dendrite_wraps"] += wraps * steps if value.constant else wraps
                a_in += contribution.reshape(-1, *full)
        if self.mode == "lava":  # each synapse emits what it received one step earlier
            a_in = torch.cat([torch.zeros_like(a_in[:1]), a_in[:-1]])
        u = torch.zeros(full, dtype=torch.int64, device=device)
        v = self.v_init.expand(full).clone()
        s = torch.zeros(full, dtype=torch.int64, device=device)
        traces = {k: torch.empty((steps, *full), dtype=torch.int64, device=device) for k in "uvs"}
        with _phase("neuron state update"):
            for t in range(steps):
                # du = 4095 multiplies by 0 and dv = 0 by 4096 >> 12: exact shortcuts for IF
                if pop.du + 1 == DECAY_UNITY:
                    decayed_u = torch.zeros_like(u)
                else:
                    decayed_u = rtz_shift(u * (DECAY_UNITY - (pop.du + 1)), DECAY_SHIFT)
                current = decayed_u + wrap_signed(a_in[t] << pop.act_shift, 32)
                u = lava_wrap24(current)
                tally["current_wraps"] += (u != current).sum()
                decayed_v = v if pop.dv == 0 else rtz_shift(v * (DECAY_UNITY - pop.dv), DECAY_SHIFT)
                voltage = decayed_v + u + self.bias
                v = voltage.clamp(-MAX_V, MAX_V)
                tally["voltage_clips"] += (v != voltage).sum()
                if pop.spiking:
                    fired = v > self.vth
                    s = fired.to(torch.int64)
                    if pop.reset == "zero":
                        v = torch.where(fired, torch.zeros_like(v), v)
                    else:
                        v = v - s * self.reset_amount
                traces["u"][t], traces["v"][t], traces["s"][t] = u, v, s
        out = {"s": traces["s"].to(torch.float32), "v": traces["v"]}
        if record:
            out["u"] = traces["u"]
        return out


def _effective_bias(pop: Population) -> torch.Tensor:
    mant, exp = pop.bias_mant.to(torch.int64), pop.bias_exp.to(torch.int64)
    return torch.where(exp >= 0, mant << exp.clamp(min=0), mant >> (-exp).clamp(min=0))


def _input_value(x: torch.Tensor, shape: tuple[int, ...], steps: int, max_abs: int) -> _Value:
    """An input port's payloads as a :class:`_Value`: ``[B, *shape]`` constant, or
    ``[T, B, *shape]`` (zero after ``T``)."""
    dtype = torch.float32 if max_abs < FLOAT32_EXACT else torch.float64
    if x.dim() == len(shape) + 1:
        return _Value(x.to(dtype), True, max_abs)
    stacked = torch.zeros((steps, *x.shape[1:]), dtype=dtype, device=x.device)
    stacked[: min(steps, x.shape[0])] = x[:steps]
    return _Value(stacked, False, max_abs)


def _check_order(network: IntNetwork) -> None:
    done = set(network.inputs)
    for pop in network.populations:
        for proj in network.incoming(pop.name):
            if proj.source not in done:
                raise ValueError(
                    f"Projection {proj.source}->{pop.name} reads a population that is not before "
                    f"{pop.name!r}: the simulator runs feed-forward networks with populations in "
                    "topological order (as the quantizer builds them); reorder the populations."
                )
        done.add(pop.name)


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
    _check_order(network)
    first = next(iter(inputs.values()))
    device = first.device
    shapes = dict(network.inputs)
    shapes.update({p.name: p.shape for p in network.populations})
    constant = {n: x.dim() == len(shapes[n]) + 1 for n, x in inputs.items()}
    batch = first.shape[0] if constant[next(iter(inputs))] else first.shape[1]
    max_abs = {n: int(x.abs().max()) if x.numel() else 0 for n, x in inputs.items()}
    populations = {
        pop.name: _Population(
            pop,
            [_Synapses(pr, mode, shapes[pr.source], device) for pr in network.incoming(pop.name)],
            mode,
            device,
        )
        for pop in network.populations
    }
    fan_out: dict[str, torch.Tensor] = {}
    for pop in populations.values():
        for syn in pop.synapses:
            if syn.proj.source not in network.inputs:
                fan_out[syn.proj.source] = fan_out.get(syn.proj.source, 0) + syn.fan_out
    # Device-side tallies, read once at the end (no host sync per step).
    tally = {
        p.name: {f: torch.zeros((), dtype=torch.int64, device=device) for f in _COUNTER_FIELDS}
        for p in network.populations
    }
    readouts = []
    traces: dict[str, dict[str, list[torch.Tensor]]] = {
        p.name: {"u": [], "v": [], "s": []} for p in network.populations
    }
    size = sub_batch_size(batch, steps, device)
    with _no_tf32(), torch.no_grad():
        for start in range(0, batch, size):
            part = slice(start, start + size)
            values = {
                n: _input_value(
                    x[part] if constant[n] else x[:, part], shapes[n], steps, max_abs[n]
                )
                for n, x in inputs.items()
            }
            b = min(size, batch - start)
            for name, pop in populations.items():
                with _phase(f"layer.{name}"):
                    sources = [values[syn.proj.source] for syn in pop.synapses]
                    keep_v = name == network.output
                    out = pop.run(sources, steps, b, tally[name], record, keep_v)
                    with _phase("spike/synop counting"):
                        per_neuron = out["s"].sum(dim=(0, 1)).to(torch.int64)
                        tally[name]["spikes"] += per_neuron.sum()
                        if name in fan_out:
                            tally[name]["synops"] += (per_neuron * fan_out[name]).sum()
                    values[name] = _Value(out["s"], False, 1)
                    if record:
                        for key in ("u", "v"):
                            traces[name][key].append(out[key])
                        traces[name]["s"].append(out["s"].to(torch.int64))
                    if name == network.output:
                        readouts.append(out["v"])
    stacked = (
        {n: {k: torch.cat(v, dim=1) for k, v in d.items()} for n, d in traces.items()}
        if record
        else {}
    )
    counters = {
        name: PopulationCounters(
            **{k: int(v) for k, v in fields.items()},
            neuron_updates=steps * batch * int(torch.Size(shapes[name]).numel()),
        )
        for name, fields in tally.items()
    }
    return SimResult(readout=torch.cat(readouts, dim=1), counters=counters, traces=stacked)
