"""QCFS: quantization-clip-floor-shift activation (Bu et al., ICLR 2022), ``model.activation=qcfs``.

``y = theta * clip(floor(x * L / theta + phi) / L, 0, 1)`` with a learned threshold ``theta`` per
layer, ``L`` levels and the shift ``phi`` (default 1/2); the floor passes gradients straight
through. An IF neuron with threshold ``theta`` and initial membrane ``phi * theta`` reproduces it in
expectation (with ``phi = 1/2`` the expected conversion error is zero, the paper's argument), so
conversion uses the learned ``theta`` as the IF threshold and ``conversion.v_init`` should equal
``phi`` (it warns otherwise). ``+model.activation_kwargs.shift=0`` trains the unshifted
clip-floor quantizer, for measuring what the shift does (docs/results.md).

The paper starts every ``theta`` at a fixed 8.0. Behind BatchNorm the pre-activations are O(1), so
with 8.0 most activations sit on the lowest one or two of the L levels, where one spike too many or
too few at conversion is a 50-100% error (docs/results.md measures it). By default ``theta`` is
therefore initialized from data: the ``init_percentile``-th percentile of the layer's input on the
first training batch (the robust maximum ReLU calibration uses), averaged over DDP processes.
The thresholds train with the weights; ``+model.optimizer.clip_lr_scale=S`` and
``+model.optimizer.clip_weight_decay=W`` give them their own learning rate (``lr * S``) and weight
decay (default: the weights').
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neurocuda.models import qcfs_kernel
from neurocuda.models.layers import register_activation


class _Quantize(torch.autograd.Function):
    """``theta * clip(floor(x / theta * L + phi) / L, 0, 1)`` with a straight-through floor.

    Written by hand (not as autograd over ~10 elementwise ops) because those ops are memory-bound
    and made QCFS training 2.7x slower than ReLU on CPU: this saves only the input (in its own,
    e.g. bf16, dtype) and recomputes the levels in backward; on CPU both directions run in
    :mod:`~neurocuda.models.qcfs_kernel`'s single passes, elsewhere in tensor operations. Values
    equal the plain autograd form exactly, gradients to rounding (the clamp passes gradient
    strictly inside (0, 1), as ``torch.clamp``'s backward does).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, theta: torch.Tensor, levels: int, shift: float, kernel: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(x, theta)
        ctx.levels, ctx.shift = levels, shift
        # fp32 even under bf16 autocast: the level boundaries must be where the fp32 SNN puts them
        x = x.float()
        ctx.kernel = kernel and qcfs_kernel.applies(x, theta)
        if ctx.kernel:
            return qcfs_kernel.quantize(x, theta, levels, shift)
        return _levels(x, theta, levels, shift).div_(levels).clamp_(0.0, 1.0).mul_(theta)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        saved, theta = ctx.saved_tensors
        levels, shift = ctx.levels, ctx.shift
        x = saved.float()
        if ctx.kernel:
            grad_x, grad_theta = qcfs_kernel.quantize_backward(x, grad, theta, levels, shift)
            return grad_x.to(saved.dtype), grad_theta.reshape(theta.shape), None, None, None
        q = _levels(x, theta, levels, shift)
        grad_x = torch.where((q > 0) & (q < levels), grad, 0.0)
        # y = theta * clip(q / L): d/dtheta = clip(q / L) + [inside] * theta * d(q / L)/dtheta,
        # and the straight-through d(q / L)/dtheta = -x / theta**2
        level = q.div_(levels).clamp_(0.0, 1.0)
        grad_theta = (grad * level).sum() - (grad_x * x).sum() / theta
        return grad_x.to(saved.dtype), grad_theta.reshape(theta.shape), None, None, None


def _levels(x: torch.Tensor, theta: torch.Tensor, levels: int, shift: float) -> torch.Tensor:
    """``floor(x / theta * L + phi)``: the quantization level, in that order of operations."""
    return torch.div(x, theta).mul_(levels).add_(shift).floor_()


class QCFS(nn.Module):
    """Trainable quantized clip activation with ``levels`` steps up to a learned ``threshold``.

    ``threshold=None`` (default): set from the first training batch (see the module docstring).
    ``shift``: the ``phi`` added before the floor, in [0, 1).
    """

    def __init__(
        self,
        levels: int = 8,
        threshold: float | None = None,
        init_percentile: float = 99.9,
        shift: float = 0.5,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}.")
        if not 0 <= shift < 1:
            raise ValueError(
                f"QCFS shift must be in [0, 1) (a fraction of one level), got {shift}; "
                "the paper's is 0.5."
            )
        if threshold is not None and threshold <= 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}.")
        if not 0 < init_percentile <= 100:
            raise ValueError(f"QCFS init_percentile must be in (0, 100], got {init_percentile}.")
        self.levels = levels
        self.shift = float(shift)
        self.compiled_kernel = True
        """Run on CPU in :mod:`~neurocuda.models.qcfs_kernel`'s loops (same values, faster
        training); False: in tensor operations (for comparison)."""
        self.init_percentile = init_percentile
        self.threshold = nn.Parameter(torch.tensor(1.0 if threshold is None else float(threshold)))
        self.register_buffer("initialized", torch.tensor(threshold is not None))
        self._initialized = threshold is not None
        """``initialized`` known on the host: reading the buffer on a GPU waits for it (a sync
        per QCFS layer and step: 17 per ResNet-18 step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under torch.compile (model.compile): initialized by an eager first step, and the
        # quantizer in tensor operations, which the compiler fuses (it cannot trace the kernels)
        compiling = torch.compiler.is_compiling()
        if self.training and not compiling and not self._initialized:
            self._initialized = bool(self.initialized)  # read once (a restored module's)
            if not self._initialized:
                self._initialize_from(x.float())
        kernel = self.compiled_kernel and not compiling
        return _Quantize.apply(x, self.threshold, self.levels, self.shift, kernel)

    @torch.no_grad()
    def _initialize_from(self, x: torch.Tensor) -> None:
        flat = x.detach().flatten()
        k = max(1, min(flat.numel(), round(self.init_percentile / 100 * flat.numel())))
        theta = flat.kthvalue(k).values.clamp_min(1e-3)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(theta)
            theta /= dist.get_world_size()
        self.threshold.fill_(float(theta))
        self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # checkpoints written before ``initialized`` existed hold trained thresholds; a file
        # without a threshold (a ReLU ANN's, init_from) leaves it to be set from data
        if prefix + "threshold" in state_dict:
            state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = False  # read from the loaded buffer at the next training step

    def extra_repr(self) -> str:
        return f"levels={self.levels}, shift={self.shift}, initialized={bool(self.initialized)}"


register_activation("qcfs", QCFS)
