"""QCFS's quantizer in compiled loops on CPU (numba): one pass forward, one pass backward.

The tensor form of :class:`~neurocuda.models.qcfs.QCFS` takes some eight elementwise passes
forward and twelve backward; on the 2-core CPU they made a CifarNet training step (batch 128,
bf16) take 2.45x as long as with ReLU, the backward alone 60% of it; with these loops 1.50x
(ResNet-20: 2.36x and 1.49x; ``scripts/benchmark_qcfs.py``, docs/results.md). Each element goes
through the whole formula once: forward ``theta * clip(floor(x / theta * L + phi) / L, 0, 1)`` in
the tensor form's float32 operations and order (no fast-math), so the values are bit-identical;
backward the straight-through gradient of ``x`` (bit-identical) and the two sums of the
threshold's gradient, per block of elements (so ``theta``'s gradient agrees to rounding). Written
by hand because PyTorch fuses no elementwise chain on CPU without ``torch.compile`` (~25 s of
compilation per shape here, docs/results.md).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from neurocuda.snn.cpu_kernel import match_torch_threads

BLOCK = 16384
"""Elements per parallel block."""


@numba.njit  # not inlined by numba: its operations keep their exact flags in _backward
def _level(x, theta, levels, shift):  # floor(x / theta * L + phi), the tensor form's order
    return np.floor(x / theta * levels + shift)


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _forward(x, theta, levels, shift, out):  # 1-D float32 arrays; the rest float32 scalars
    zero, one = np.float32(0), np.float32(1)
    n = x.shape[0]
    for block in numba.prange((n + BLOCK - 1) // BLOCK):
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            level = _level(x[i], theta, levels, shift) / levels
            out[i] = min(max(level, zero), one) * theta


# reassociation lets the two sums vectorize (3x faster than a sum in order); it touches only the
# sums: the levels come from _level's exact operations, so the mask equals the forward's
@numba.njit(parallel=True, fastmath={"reassoc"}, cache=True, boundscheck=False)
def _backward(x, grad, theta, levels, shift, grad_x, sums):  # sums [blocks, 2] float64
    zero, one = np.float32(0), np.float32(1)
    n = x.shape[0]
    for block in numba.prange((n + BLOCK - 1) // BLOCK):
        clipped, inside = zero, zero  # float32 within a block, as the tensor form sums
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            q = _level(x[i], theta, levels, shift)
            g = grad[i]
            passed = g if (zero < q) & (q < levels) else zero
            grad_x[i] = passed
            inside += passed * x[i]
            clipped += g * min(max(q / levels, zero), one)
        sums[block, 0] = clipped
        sums[block, 1] = inside


def applies(x: torch.Tensor, theta: torch.Tensor) -> bool:
    """Whether the kernels run ``x``: a float32 CPU tensor, dense in memory (any dimension order),
    with one threshold for the layer."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and theta.numel() == 1
        and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
    )


def _flat(x: torch.Tensor) -> np.ndarray:
    """The elements of a dense tensor in memory order, as a 1-D numpy view."""
    match_torch_threads()
    return x.detach().as_strided((x.numel(),), (1,)).numpy()


def quantize(x: torch.Tensor, theta: torch.Tensor, levels: int, shift: float) -> torch.Tensor:
    """The forward value for ``x`` (:func:`applies`), in ``x``'s layout."""
    out = torch.empty_like(x)
    _forward(_flat(x), np.float32(theta.item()), np.float32(levels), np.float32(shift), _flat(out))
    return out


def quantize_backward(
    x: torch.Tensor, grad: torch.Tensor, theta: torch.Tensor, levels: int, shift: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``x`` (in ``x``'s layout) and of ``theta`` (a float32 scalar) from the
    output's ``grad``."""
    if grad.dtype != x.dtype or grad.stride() != x.stride():
        grad = torch.empty_like(x).copy_(grad)
    grad_x = torch.empty_like(x)
    sums = np.zeros(((x.numel() + BLOCK - 1) // BLOCK, 2))
    value = theta.item()
    scalars = np.float32(value), np.float32(levels), np.float32(shift)
    _backward(_flat(x), _flat(grad), *scalars, _flat(grad_x), sums)
    clipped, inside = sums.sum(0)
    return grad_x, torch.tensor(clipped - inside / value, dtype=torch.float32)
