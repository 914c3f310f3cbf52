"""Which options of a layer a NIR node (nir 1.0.8) expresses faithfully: one check, run by
conversion before any work (:func:`neurocuda.conversion.validate.plan_conversion`) and by export on
whatever model it is given."""

from __future__ import annotations

from torch import nn


def unsupported_options(module: nn.Module) -> str | None:
    """Why ``module``'s options have no faithful NIR node, with the fix; None when they have one."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} has no NIR equivalent; use 'zeros'"
        if module.groups != 1:
            return (
                f"groups={module.groups}: nir's Conv nodes read their input channels from "
                "weight.shape[1], so a grouped or depthwise convolution gets a wrong type; use "
                "groups=1"
            )
        if len(set(module.kernel_size)) > 1:
            return (
                f"kernel_size={module.kernel_size}: nir's Conv2d computes its output size from the "
                "first kernel dimension only; use a square kernel"
            )
    if isinstance(module, nn.AvgPool2d):
        padding = nn.modules.utils._pair(module.padding)
        if (
            module.ceil_mode
            or module.divisor_override
            or (any(padding) and not module.count_include_pad)
        ):
            return (
                "NIR's AvgPool2d has no ceil_mode, divisor_override or padding excluded from the "
                "count; use nn.AvgPool2d(kernel, stride, padding) with the defaults"
            )
    if isinstance(module, nn.Flatten) and module.start_dim == 0:
        return "it flattens the batch dimension; use start_dim >= 1"
    return None
