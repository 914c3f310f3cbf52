"""IF layers in compiled loops on CPU (numba): the runtime's and the fine-tuning's fast path.

:func:`~neurocuda.snn.if_sequence.integrate_and_fire` runs a layer as three tensor operations per
step, each a pass over the layer (and a call into PyTorch), then the :class:`~neurocuda.snn.Scale`
multiplies all steps in another pass: ~15% of a CifarNet's inference time on CPU; the backward
pass of fine-tuning adds some ten passes per step (docs/results.md). Here each block of neurons
goes through all T steps in one loop, compiled once per dtype (~3 s, then cached on disk):

- :func:`fire_and_scale` (inference): membrane and spike kept in a block-local array, the input
  read once, ``theta * s`` written once;
- :func:`integrate_and_fire_kept` and :func:`if_backward` (fine-tuning, ``if_sequence``): the
  layer's scale applied in the same pass, every step's membrane kept (the spikes are recomputed
  from them), and the surrogate gradient of the whole sequence in one backward sweep with the
  threshold's, fire level's and scale's sums per channel.

The forward loops do the same float operations as ``integrate_and_fire`` (docs/semantics.md):
``u_0 = x_0``, ``u_t = u_{t-1} + (x_t + s_{t-1} * (-theta))``, ``s_t = u_t > fire_level``, each
rounded to the tensor's dtype (no fast-math; the product with a 0/1 spike is exact, so a fused
multiply-add changes nothing), so their spikes equal the tensor operations' bit for bit; the
gradients agree to float rounding (the channel sums add in another order; tests/test_cpu_kernel.py).
Written by hand because PyTorch has no fused kernel for a recurrence over time and
``torch.compile`` spends ~25 s compiling per input shape (docs/results.md).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

BLOCK_ROWS = 256
"""Rows (positions x images) of one block: its membranes and spikes stay in L1/L2 across steps."""

DTYPES = (torch.float32, torch.float64)


@numba.njit(inline="always")
def _membrane(previous, x_t, spike, neg_threshold):  # the contract's update, in its order
    return previous + (x_t + spike * neg_threshold)


@numba.njit(inline="always")
def _block(block, rows):  # rows [lo, hi) of a block
    lo = block * BLOCK_ROWS
    return lo, min(lo + BLOCK_ROWS, rows)


@numba.njit
def _blocks(rows):
    return (rows + BLOCK_ROWS - 1) // BLOCK_ROWS


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _fire_and_scale(x, fire_level, neg_threshold, scale, out):  # numpy arrays; see fire_and_scale
    steps, rows, channels = out.shape
    constant = x.shape[0] == 1  # one row for all steps: a constant current
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for block in numba.prange(_blocks(rows)):
        lo, hi = _block(block, rows)
        membrane = np.empty((hi - lo, channels), dtype=x.dtype)
        spike = np.empty((hi - lo, channels), dtype=x.dtype)
        for r in range(lo, hi):
            for c in range(channels):
                u = x[0, r, c]
                s = one if u > fire_level[c] else zero
                membrane[r - lo, c] = u
                spike[r - lo, c] = s
                out[0, r, c] = s * scale[c]
        for t in range(1, steps):
            for r in range(lo, hi):
                for c in range(channels):
                    x_t = x[0 if constant else t, r, c]
                    u = _membrane(membrane[r - lo, c], x_t, spike[r - lo, c], neg_threshold[c])
                    s = one if u > fire_level[c] else zero
                    membrane[r - lo, c] = u
                    spike[r - lo, c] = s
                    out[t, r, c] = s * scale[c]


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _fire_scale_pool(x, fire_level, neg_threshold, scale, kernel, out):  # see fire_scale_pool
    steps, batch, out_h, out_w, channels = out.shape
    width = out_w * kernel
    constant = x.shape[0] == 1
    one, zero = x.dtype.type(1), x.dtype.type(0)
    divisor = x.dtype.type(kernel * kernel)
    for unit in numba.prange(batch * out_h):  # one row of pooling windows of one image
        b, oh = unit // out_h, unit % out_h
        membrane = np.empty((kernel, width, channels), dtype=x.dtype)
        total = np.empty((out_w, channels), dtype=x.dtype)
        for t in range(steps):
            rows = x[0 if constant else t, b]
            total[:] = zero
            for kh in range(kernel):  # the window's elements in row-major order, as avg_pool2d
                row, state = rows[oh * kernel + kh], membrane[kh]
                for w in range(width):
                    window = total[w // kernel]
                    for c in range(channels):
                        if t == 0:
                            u = row[w, c]
                        else:  # the previous spike, recomputed from the kept membrane
                            previous = state[w, c]
                            spike = one if previous > fire_level[c] else zero
                            u = _membrane(previous, row[w, c], spike, neg_threshold[c])
                        state[w, c] = u
                        window[c] += (one if u > fire_level[c] else zero) * scale[c]
            for ow in range(out_w):
                for c in range(channels):
                    out[t, b, oh, ow, c] = total[ow, c] / divisor


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _integrate_kept(x, fire_level, neg_threshold, scale, out, membranes):  # see integrate_and_fire
    steps, rows, channels = out.shape
    constant = x.shape[0] == 1
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for block in numba.prange(_blocks(rows)):
        lo, hi = _block(block, rows)
        for r in range(lo, hi):
            for c in range(channels):
                u = x[0, r, c]
                membranes[0, r, c] = u
                out[0, r, c] = (one if u > fire_level[c] else zero) * scale[c]
        for t in range(1, steps):
            for r in range(lo, hi):
                for c in range(channels):
                    x_t = x[0 if constant else t, r, c]
                    previous = membranes[t - 1, r, c]  # its spike, recomputed: no spike array
                    spike = one if previous > fire_level[c] else zero
                    u = _membrane(previous, x_t, spike, neg_threshold[c])
                    membranes[t, r, c] = u
                    out[t, r, c] = (one if u > fire_level[c] else zero) * scale[c]


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _backward(grad, membranes, fire_level, half_width, reset_gain, scale, grad_x, sums):
    steps, rows, channels = grad.shape
    one, zero = grad.dtype.type(1), grad.dtype.type(0)
    last = steps - 1
    for block in numba.prange(_blocks(rows)):
        lo, hi = _block(block, rows)
        reset, fire, scaled = sums[0, block], sums[1, block], sums[2, block]  # per channel
        for t in range(last, -1, -1):
            for r in range(lo, hi):
                for c in range(channels):
                    u = membranes[t, r, c]
                    fired = u > fire_level[c]
                    # the surrogate slope, as triangle_slope computes it
                    distance = abs(u - fire_level[c]) / half_width[c]
                    slope = max(one - distance, zero) / half_width[c]
                    if fired:
                        scaled[c] += grad[t, r, c]  # d(s * scale) / d scale = s
                    grad_spike = grad[t, r, c] * scale[c]  # the scale's backward, as autograd's
                    if t == last:
                        grad_x[t, r, c] = grad_spike * slope
                    else:
                        after = grad_x[t + 1, r, c]
                        if fired:
                            reset[c] += after
                        total = grad_spike + after * reset_gain[c]
                        grad_x[t, r, c] = after + total * slope
        for r in range(lo, hi):
            for c in range(channels):
                fire[c] += grad_x[0, r, c]


def _one_step_if_constant(x: torch.Tensor) -> torch.Tensor:
    """``x`` (``[T, ...]``) or, for a constant current (expanded over T, stride 0), its first
    step ``[1, ...]``."""
    return x[:1] if x.shape[0] > 1 and x.stride(0) == 0 else x


def _channels_last(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` (``[T, B, C, H, W]`` or ``[T, B, F]``) as a ``[T, rows, channels]`` view whose last
    dimension is the channel (feature), or ``None`` where its memory is not laid out so. A
    constant current (``x`` expanded over T, stride 0) keeps one step: ``[1, rows, channels]``."""
    if x.dim() == 3:
        x = _one_step_if_constant(x)
        return x if x.is_contiguous() else None
    view = _spatial(x)
    return None if view is None else view.reshape(view.shape[0], -1, view.shape[4])


def match_torch_threads() -> None:
    """Give numba's thread pool (its own) as many threads as PyTorch is allowed."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _spatial(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` (``[T, B, C, H, W]``, channels last) as a ``[T, B, H, W, C]`` view, or ``None``
    where its memory is not laid out so; a constant current keeps one step."""
    if x.dim() != 5:
        return None
    view = _one_step_if_constant(x).permute(0, 1, 3, 4, 2)
    return view if view.is_contiguous() else None


def _per_channel(value: torch.Tensor, channels: int, dtype: torch.dtype) -> np.ndarray:
    """A per-layer or per-channel constant (:func:`_varies_by_channel_only`) as a ``[C]`` array."""
    return value.detach().to(dtype).reshape(-1).expand(channels).contiguous().numpy()


def _varies_by_channel_only(constant: torch.Tensor, features: torch.Size) -> bool:
    """Whether ``constant``, broadcast against one sample's ``features`` (``[C, H, W]`` or
    ``[F]``), holds one value per layer or per channel: ``[]``, ``[C, 1, 1]``, ``[1, C, 1, 1]``;
    not ``[1, H, W]`` (one per position, even where H x W happens to equal C) nor ``[C]`` against
    ``[C, H, W]`` (broadcasting reads that along W)."""
    shape = list(constant.shape)
    while len(shape) > len(features) and shape[0] == 1:
        shape.pop(0)
    if len(shape) > len(features):
        return False
    shape = [1] * (len(features) - len(shape)) + shape
    return shape[0] in (1, features[0]) and all(size == 1 for size in shape[1:])


def applies(x: torch.Tensor, *constants: torch.Tensor) -> bool:
    """Whether the kernels run ``x`` (``[T, B, ...]``): a CPU tensor of a float dtype, channels
    last in memory, with per-layer or per-channel ``constants``."""
    if x.device.type != "cpu" or x.dtype not in DTYPES or _channels_last(x) is None:
        return False
    return all(
        c.device.type == "cpu" and _varies_by_channel_only(c, x.shape[2:]) for c in constants
    )


def _arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    """``[T, rows, channels]`` numpy views of channels-last tensors (:func:`applies`)."""
    views = [_channels_last(t.detach()) for t in tensors]
    if any(v is None for v in views):
        raise ValueError("The CPU kernels need tensors laid out channels last (see applies()).")
    match_torch_threads()
    return [v.numpy() for v in views]


def fire_and_scale(
    x: torch.Tensor,
    fire_level: torch.Tensor,
    neg_threshold: torch.Tensor,
    scale: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """IF neurons with reset by subtraction run on ``x`` (``[T, B, ...]``, :func:`applies`) from a
    zero state; ``out`` (``x``'s shape and layout) receives ``spikes * scale``; returns ``out``."""
    source, target = _arrays(x, out)
    channels = x.shape[2]
    constants = [_per_channel(v, channels, x.dtype) for v in (fire_level, neg_threshold, scale)]
    _fire_and_scale(source, *constants, target)
    return out


def pools_exactly(x: torch.Tensor, kernel: int, *constants: torch.Tensor) -> bool:
    """Whether :func:`fire_scale_pool` runs ``x`` (``[T, B, C, H, W]``, :func:`applies`) with a
    ``kernel`` x ``kernel`` window: a power of two (the mean's division is then exact, however
    ``avg_pool2d`` forms it) that tiles H and W."""
    power_of_two = kernel >= 1 and kernel & (kernel - 1) == 0
    return (
        power_of_two
        and x.dim() == 5
        and x.shape[3] % kernel == 0
        and x.shape[4] % kernel == 0
        and applies(x, *constants)
        and _spatial(x) is not None
    )


def fire_scale_pool(
    x: torch.Tensor,
    fire_level: torch.Tensor,
    neg_threshold: torch.Tensor,
    scale: torch.Tensor,
    kernel: int,
    out: torch.Tensor,
) -> torch.Tensor:
    """:func:`fire_and_scale` followed by ``avg_pool2d(kernel, stride=kernel)``, in one pass
    (:func:`pools_exactly`); ``out`` is ``[T, B, C, H / kernel, W / kernel]``, channels last.

    The unpooled ``spikes * scale`` never reach memory. Bit for bit ``avg_pool2d``'s result:
    a window holds ``0`` or the channel's ``scale``, so its float sum depends only on how many
    spikes it holds, not on the order of the additions, and the division by a power of two is
    exact (tests/test_cpu_kernel.py compares them)."""
    source, target = _spatial(x.detach()), _spatial(out)
    if source is None or target is None:
        raise ValueError("fire_scale_pool needs tensors laid out channels last (pools_exactly()).")
    match_torch_threads()
    channels = x.shape[2]
    constants = [_per_channel(v, channels, x.dtype) for v in (fire_level, neg_threshold, scale)]
    _fire_scale_pool(source.numpy(), *constants, kernel, target.numpy())
    return out


def integrate_and_fire_kept(
    x: torch.Tensor,
    fire_level: torch.Tensor,
    neg_threshold: torch.Tensor,
    scale: torch.Tensor,
    out: torch.Tensor,
    membranes: torch.Tensor,
) -> None:
    """:func:`~neurocuda.snn.if_sequence.integrate_and_fire` times ``scale`` (a one for plain
    spikes) into ``out``, with every step's membrane kept in ``membranes`` (both as ``x``,
    :func:`applies`) for backprop through time; the spikes are ``membranes > fire_level``."""
    source, target, membrane_rows = _arrays(x, out, membranes)
    channels = x.shape[2]
    constants = [_per_channel(v, channels, x.dtype) for v in (fire_level, neg_threshold, scale)]
    _integrate_kept(source, *constants, target, membrane_rows)


def if_backward(
    grad: torch.Tensor,
    membranes: torch.Tensor,
    fire_level: torch.Tensor,
    half_width: torch.Tensor,
    scale: torch.Tensor,
    reset_gain: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward pass of :func:`integrate_and_fire_kept` with the triangle surrogate, from the
    gradient of its output ``grad``: the gradient of the input (``membranes``' shape and layout)
    and, per channel, the sums ``sum_t g_{t+1} s_t`` (minus the threshold's gradient through the
    reset), ``sum g_0`` (minus the fire level's) and ``sum_t grad_t s_t`` (the scale's);
    ``half_width`` and ``reset_gain``: :class:`~neurocuda.snn.surrogate.Surrogate`'s (theta and
    -theta by default); ``_KernelIFSequence.backward`` has the formulas."""
    # a gradient the same at every step (stride 0 over T, e.g. from spikes.sum(0)) is read one
    # step per step, not as a constant input's single step: laid out in full first
    constant_over_t = grad.shape[0] > 1 and grad.stride(0) == 0
    if grad.dtype != membranes.dtype or constant_over_t or _channels_last(grad) is None:
        grad = torch.empty_like(membranes).copy_(grad)
    grad_x = torch.empty_like(membranes)
    rows, channels = grad_x.numel() // (grad_x.shape[0] * grad_x.shape[2]), grad_x.shape[2]
    sums = torch.zeros((3, _blocks(rows), channels), dtype=grad.dtype)
    arrays = _arrays(grad, membranes, grad_x)
    constants = [
        _per_channel(v, channels, grad.dtype) for v in (fire_level, half_width, reset_gain, scale)
    ]
    _backward(*arrays[:2], *constants, arrays[2], sums.numpy())
    reset, fire, scaled = sums.sum(1)
    return grad_x, reset, fire, scaled
