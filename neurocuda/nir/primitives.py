"""Torch implementations of the nir 1.0.8 primitives used by :class:`~neurocuda.nir.Executor`.

Stateless ops take ``[N, *shape]`` (N = time x batch, or batch alone) and return ``[N, *shape']``.
Stateful ops advance one time step: ``step(x_t, state) -> (y_t, state)``; ``state`` is ``None`` at
``t = 0``, which stands for zero membrane/current. Continuous-time neurons use forward Euler with
step ``dt`` (documented in docs/nir.md):

- I:       v += dt*r*x                                  -> output v
- IF:      v += dt*r*x;  z = v > v_th;  v = v_reset where z        -> output z
- LI:      v += dt/tau * ((v_leak - v) + r*x)           -> output v
- LIF:     LI update;    z = v > v_th;  v = v_reset where z        -> output z
- CubaLI:  i += dt/tau_syn * (-i + w_in*x);  v += dt/tau_mem * ((v_leak - v) + r*i)  -> output v
- CubaLIF: CubaLI update; z = v > v_th; v = v_reset where z        -> output z
- Delay:   y_t = x_{t - delay/dt} (zero before the start); delay/dt must be a whole number.

A factor that is exactly 1 everywhere (e.g. ``dt*r`` with r = 1, dt = 1) is skipped: multiplying by
1.0 is exact in IEEE arithmetic, so skipping it changes no bit and saves a pass over memory.
"""

from __future__ import annotations

from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

State = Any


def _tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=dtype).clone()


def _param(value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A per-neuron parameter with every axis along which it is constant reduced to size 1.

    NIR stores parameters per neuron (e.g. ``[C, H, W]``); broadcasting the compact ``[C, 1, 1]``
    gives the same values but elementwise kernels run several times faster with it on CPU.
    """
    array = np.asarray(value)
    for axis in range(array.ndim):
        first = array.take([0], axis=axis)
        if np.array_equal(array, np.broadcast_to(first, array.shape)):
            array = first
    return _tensor(array, dtype)


def _pair(value: Any) -> tuple[int, ...] | str:
    if isinstance(value, str | bytes):
        return value.decode() if isinstance(value, bytes) else value
    array = np.atleast_1d(np.asarray(value)).astype(int)
    return tuple(int(v) for v in array)


class Stateless(nn.Module):
    """Base of ops without memory; :meth:`into` writes the result into a given buffer."""

    stateful = False
    elementwise = False
    """True when the output has the input's shape (so a buffer can be made before the call)."""

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(self(x))


class Stateful(nn.Module):
    """Base of ops with memory; subclasses implement :meth:`step`."""

    stateful = True

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def step_(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """A step that may reuse ``state``'s memory; its output is valid until the next step."""
        return self.step(x, state)


class Identity(Stateless):
    """Input/Output nodes (and the boundaries of inlined subgraphs)."""

    elementwise = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class LinearOp(Stateless):
    """Affine (``W x + b``) and Linear (``W x``) with ``F.linear``, as ``nn.Linear`` computes."""

    def __init__(self, weight: Any, bias: Any | None, dtype: torch.dtype, name: str) -> None:
        super().__init__()
        if np.ndim(weight) != 2:
            raise ValueError(
                f"Node {name!r}: weight of shape {np.shape(weight)} is not 2-D; the executor runs "
                "Affine/Linear nodes with [out, in] weights only."
            )
        self.register_buffer("weight", _tensor(weight, dtype))
        self.register_buffer("bias", None if bias is None else _tensor(bias, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ConvOp(Stateless):
    """Conv1d / Conv2d with NIR's stride, padding ('same', 'valid' or ints), dilation, groups."""

    def __init__(self, node: nir.Conv1d | nir.Conv2d, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("weight", _tensor(node.weight, dtype))
        self.register_buffer("bias", _tensor(node.bias, dtype))
        self.conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
        self.stride = _pair(node.stride)
        self.padding = _pair(node.padding)
        self.dilation = _pair(node.dilation)
        self.groups = int(node.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class PoolOp(Stateless):
    """AvgPool2d (mean over the window, padding counted) and SumPool2d (exact window sum)."""

    def __init__(self, node: nir.AvgPool2d | nir.SumPool2d) -> None:
        super().__init__()
        self.kernel = _pair(node.kernel_size)
        self.stride = _pair(node.stride)
        self.padding = _pair(node.padding)
        # divisor 1 turns torch's average kernel into a plain window sum (no rounding from a
        # multiply by the window size afterwards).
        self.divisor = 1 if isinstance(node, nir.SumPool2d) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            x, self.kernel, self.stride, self.padding, divisor_override=self.divisor
        )


class FlattenOp(Stateless):
    """NIR's dims exclude the batch dimension, so they shift by one (negative ones are kept)."""

    def __init__(self, node: nir.Flatten) -> None:
        super().__init__()
        start, end = int(node.start_dim), int(node.end_dim)
        self.start = start + 1 if start >= 0 else start
        self.end = end + 1 if end >= 0 else end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start, self.end)


class ScaleOp(Stateless):
    """Elementwise product with the node's scale."""

    elementwise = True

    def __init__(self, scale: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("scale", _param(scale, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.mul(x, self.scale, out=out)


class ThresholdOp(Stateless):
    """Heaviside ``x > threshold`` as 0/1 in the input's dtype."""

    elementwise = True

    def __init__(self, threshold: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("threshold", _param(threshold, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.gt(x, self.threshold, out=out)  # 1.0 / 0.0 in out's dtype


def _factor(value: Any, dtype: torch.dtype) -> torch.Tensor | None:
    """A multiplier as a tensor, or ``None`` when it is exactly 1 everywhere (skipped, exact)."""
    tensor = _param(np.asarray(value, dtype=np.float64), dtype)
    return None if bool(torch.all(tensor == 1)) else tensor


def _mul(factor: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if factor is None else factor * x


class IntegratorOp(Stateful):
    """I: ``v += dt*r*x``; output v."""

    def __init__(self, node: nir.I, dt: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("gain", _factor(dt * np.asarray(node.r, np.float64), dtype))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        drive = _mul(self.gain, x)
        v = drive if state is None else state + drive
        return v, v

    def step_(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """As :meth:`step`, updating the membrane in place (the output is the state buffer)."""
        drive = _mul(self.gain, x)
        v = drive.clone() if state is None else state.add_(drive)
        return v, v


class SpikingMixin:
    """Threshold and reset shared by IF, LIF and CubaLIF, by ``convention``:

    - ``nir``: spike on ``v > v_threshold``, then ``v = v_reset`` (NIR's semantics);
    - ``subtract``: spike on ``v > v_threshold``, then ``v -= v_threshold`` (files of producers
      that subtract, nir < 1.0.6 ``IF``, the ``portable-soft`` profile);
    - ``spikingjelly``: spike on ``v >= v_threshold`` (its ``IFNode``, ``heaviside(v - v_th)``
      with ``>= 0``), then ``v = v_reset``;
    - ``snntorch``: snnTorch's ``Leaky`` for ``LIF`` nodes (:meth:`LeakyOp._snntorch_step`);
    - ``sinabs``: sinabs 3.1's ``IAF`` as its ``from_nir`` builds it, operation for operation
      (``sinabs/layers/functional/lif.py``, ``MultiSpike``, ``MembraneSubtract``): ``n =
      trunc(v / v_threshold)`` spikes where ``v > 0`` (so ``>=``, several per step), ``v -= n *
      v_threshold``, then ``v`` is floored at ``-v_threshold`` (``min_v_mem``).
    """

    threshold: torch.Tensor
    v_reset: torch.Tensor
    convention = "nir"

    def fire(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.convention == "sinabs":
            spikes = (v > 0) * torch.div(v, self.threshold, rounding_mode="trunc")
            floor = -self.threshold
            return spikes, F.relu(v - spikes * self.threshold - floor) + floor
        jelly = self.convention == "spikingjelly"
        spikes = v >= self.threshold if jelly else v > self.threshold
        after = v - self.threshold if self.convention == "subtract" else self.v_reset
        return spikes.to(v.dtype), torch.where(spikes, after, v)


class IFOp(Stateful, SpikingMixin):
    """IF: ``v += dt*r*x``, spike on ``v > v_threshold``, then ``v = v_reset``; output spikes."""

    def __init__(self, node: nir.IF, dt: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("gain", _factor(dt * np.asarray(node.r, np.float64), dtype))
        self.register_buffer("threshold", _param(node.v_threshold, dtype))
        self.register_buffer("v_reset", _param(node.v_reset, dtype))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        drive = _mul(self.gain, x)
        v = drive if state is None else state + drive
        return self.fire(v)


class LeakyOp(Stateful, SpikingMixin):
    """LI / LIF: ``v += dt/tau * ((v_leak - v) + r*x)``; LIF adds threshold and reset."""

    def __init__(self, node: nir.LI | nir.LIF, dt: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.spiking = isinstance(node, nir.LIF)
        self.register_buffer("rate", _param(dt / np.asarray(node.tau, np.float64), dtype))
        self.register_buffer("r", _factor(node.r, dtype))
        self.register_buffer("v_leak", _param(node.v_leak, dtype))
        if self.spiking:
            self.register_buffer("threshold", _param(node.v_threshold, dtype))
            self.register_buffer("v_reset", _param(node.v_reset, dtype))

        # snnTorch's reading of its own LIF (``snntorch/import_nir.py``: ``beta = 1 - dt / tau``,
        # in float32 as numpy computes it there)
        tau = np.asarray(node.tau, np.float32)
        self.register_buffer("beta", _param(np.float32(1) - np.float32(dt) / tau, dtype))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.convention == "snntorch" and self.spiking:
            return self._snntorch_step(x, state)
        v = torch.zeros_like(x) if state is None else state
        v = v + self.rate * ((self.v_leak - v) + _mul(self.r, x))
        return self.fire(v) if self.spiking else (v, v)

    def _snntorch_step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """snnTorch 1.0's ``Leaky`` (``_neurons/leaky.py``, default ``reset_delay``): the
        subtraction of a spike lands one step later, undecayed: ``v_t = beta * v_(t-1) + x_t -
        theta * [v_(t-1) > theta]``; spike on ``v_t > theta``. The state is that ``v``."""
        if state is None:
            v = self.beta * torch.zeros_like(x) + x
        else:
            reset = (state > self.threshold).to(x.dtype)
            v = (self.beta * state + x) - reset * self.threshold
        return (v > self.threshold).to(x.dtype), v


class CurrentBasedOp(Stateful, SpikingMixin):
    """CubaLI / CubaLIF: the synaptic current is updated first and drives the membrane."""

    def __init__(self, node: nir.CubaLI | nir.CubaLIF, dt: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.spiking = isinstance(node, nir.CubaLIF)
        self.register_buffer("syn_rate", _param(dt / np.asarray(node.tau_syn, np.float64), dtype))
        self.register_buffer("mem_rate", _param(dt / np.asarray(node.tau_mem, np.float64), dtype))
        self.register_buffer("w_in", _factor(node.w_in, dtype))
        self.register_buffer("r", _factor(node.r, dtype))
        self.register_buffer("v_leak", _param(node.v_leak, dtype))
        if self.spiking:
            self.register_buffer("threshold", _param(node.v_threshold, dtype))
            self.register_buffer("v_reset", _param(node.v_reset, dtype))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        i, v = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
        i = i + self.syn_rate * (_mul(self.w_in, x) - i)
        v = v + self.mem_rate * ((self.v_leak - v) + _mul(self.r, i))
        if not self.spiking:
            return v, (i, v)
        spikes, v = self.fire(v)
        return spikes, (i, v)


class DelayOp(Stateful):
    """Delay by a whole number of steps per element (``delay / dt``); zeros before the start."""

    def __init__(self, node: nir.Delay, dt: float, name: str) -> None:
        super().__init__()
        steps = np.asarray(node.delay, np.float64) / dt
        if np.any(steps < 0) or not np.allclose(steps, np.round(steps)):
            raise ValueError(
                f"Node {name!r}: delays {np.unique(node.delay)} are not whole non-negative "
                f"multiples of dt={dt}; choose dt so that delay/dt is an integer."
            )
        self.register_buffer("steps", torch.as_tensor(np.round(steps).astype(np.int64)))
        self.depth = int(self.steps.max()) if self.steps.numel() else 0

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = x.clone()  # the executor reuses its input buffers step after step: keep the values
        history = [x] if state is None else [*state, x][-(self.depth + 1) :]
        y = torch.zeros_like(x)
        for d in torch.unique(self.steps).tolist():
            if d < len(history):
                y = torch.where(self.steps == d, history[-1 - d], y)
        return y, history


def make_op(
    name: str, node: nir.NIRNode, dt: float, dtype: torch.dtype, convention: str = "nir"
) -> nn.Module:
    """Build the torch op for ``node``; raise for node types the executor does not run.

    ``convention`` (``nir``, ``subtract``, ``spikingjelly``, ``snntorch``, ``sinabs``): how spiking
    neurons fire and reset (:class:`SpikingMixin`).
    """
    op = _make_op(name, node, dt, dtype)
    if isinstance(op, SpikingMixin):
        op.convention = convention
    if convention == "snntorch" and isinstance(node, nir.IF | nir.CubaLIF):
        raise ValueError(
            f"Node {name!r} is {type(node).__name__}; convention='snntorch' runs the LIF nodes "
            "that snnTorch writes for Leaky neurons. Run other files with convention='nir'."
        )
    if convention == "snntorch" and isinstance(node, nir.LIF):
        scale = np.asarray(node.r) * dt / np.asarray(node.tau)
        if not np.allclose(scale, 1.0):
            raise ValueError(
                f"Node {name!r}: convention='snntorch' needs r * dt / tau = 1 (snnTorch adds its "
                f"input unscaled), got {np.unique(scale)[:3]} at dt={dt}; snnTorch writes its "
                "files for dt = 1e-4."
            )
    return op


def _make_op(name: str, node: nir.NIRNode, dt: float, dtype: torch.dtype) -> nn.Module:
    if isinstance(node, nir.Input | nir.Output):
        return Identity()
    if isinstance(node, nir.Affine):
        return LinearOp(node.weight, node.bias, dtype, name)
    if isinstance(node, nir.Linear):
        return LinearOp(node.weight, None, dtype, name)
    if isinstance(node, nir.Conv1d | nir.Conv2d):
        return ConvOp(node, dtype)
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        return PoolOp(node)
    if isinstance(node, nir.Flatten):
        return FlattenOp(node)
    if isinstance(node, nir.Scale):
        return ScaleOp(node.scale, dtype)
    if isinstance(node, nir.Threshold):
        return ThresholdOp(node.threshold, dtype)
    if isinstance(node, nir.I):
        return IntegratorOp(node, dt, dtype)
    if isinstance(node, nir.IF):
        return IFOp(node, dt, dtype)
    if isinstance(node, nir.LI | nir.LIF):
        return LeakyOp(node, dt, dtype)
    if isinstance(node, nir.CubaLI | nir.CubaLIF):
        return CurrentBasedOp(node, dt, dtype)
    if isinstance(node, nir.Delay):
        return DelayOp(node, dt, name)
    raise ValueError(
        f"Node {name!r} has type {type(node).__name__}, which the executor does not run. "
        "Supported: Input, Output, Affine, Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, "
        "Scale, Threshold, I, IF, LI, LIF, CubaLI, CubaLIF, Delay."
    )
