"""The staged ANN -> SNN recipe: validate -> fold BatchNorm -> calibrate -> replace -> finalize ->
correct initial membranes."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import nn

from neurocuda.batches import first_images
from neurocuda.conversion.calibrate import (
    calibrate_relu_thresholds,
    qcfs_thresholds,
    split_by_kind,
)
from neurocuda.conversion.correct import activation_channel_means, correct_initial_membranes
from neurocuda.conversion.errors import ConversionError
from neurocuda.conversion.fold import fold_batchnorms
from neurocuda.conversion.settings import ConversionConfig
from neurocuda.conversion.validate import NetworkPlan, check_image_shape, plan_conversion
from neurocuda.snn import (
    IFNeuron,
    OutputIntegrator,
    ResetMode,
    Scale,
    SpikingActivation,
    SpikingModel,
)

log = logging.getLogger(__name__)


def convert(
    ann: nn.Module,
    calibration_data: Iterable | None = None,
    config: ConversionConfig | None = None,
) -> SpikingModel:
    """Return a new :class:`SpikingModel` equivalent to ``ann``; ``ann`` itself is not modified.

    ``calibration_data`` yields ``(x, y)`` or ``x`` batches; it is needed when the ANN has ReLU
    activations (QCFS layers carry learned thresholds) or ``correction_timesteps > 0``.
    """
    config = config or ConversionConfig()
    if config.reset == "zero":
        log.warning(
            "conversion.reset=zero (hard reset) discards the membrane surplus at every spike and "
            "loses accuracy, most at low T (see docs/results.md); use it only for the portable "
            "NIR profile / Lava."
        )
    device = next(ann.parameters()).device
    net = copy.deepcopy(ann).eval()  # the caller's ANN (and its training flag) stays untouched
    plan = plan_conversion(net, config.input_shape)
    fold_batchnorms(net, plan.batchnorm_of)
    thresholds = _thresholds(net, plan, calibration_data, config)
    correction_images, targets = None, {}
    if config.correction_timesteps:
        correction_images = _first_images(calibration_data, config, device)
        targets = activation_channel_means(net, list(plan.activations), correction_images)
    snn = _assemble(net, plan, thresholds, config).to(device)
    if correction_images is not None:
        neurons = {name: f"{name}.0" for name in plan.activations}  # see _replace_activations
        errors = correct_initial_membranes(
            snn, neurons, targets, correction_images, config.correction_timesteps
        )
        before = {name: round(error, 4) for name, error in errors.items()}
        log.info("Initial membranes corrected at T=%d; mean output error before: %s",
                 config.correction_timesteps, before)  # fmt: skip
    return snn


def spiking_structure(
    ann: nn.Module, reset: ResetMode = "subtract", input_shape: tuple[int, ...] = (3, 32, 32)
) -> SpikingModel:
    """The :class:`SpikingModel` :func:`convert` builds from ``ann``'s architecture, without data.

    Thresholds are placeholders (1.0 per layer): the result is a container to load a saved spiking
    model's state dict into (:func:`neurocuda.snn.match_neuron_shapes` adopts per-channel shapes).
    """
    config = ConversionConfig(reset=reset, input_shape=tuple(input_shape))
    net = copy.deepcopy(ann).eval()
    plan = plan_conversion(net, config.input_shape)
    fold_batchnorms(net, plan.batchnorm_of)
    placeholders = {name: torch.ones(()) for name in plan.activations}
    return _assemble(net, plan, placeholders, config).to(next(ann.parameters()).device)


def _assemble(
    net: nn.Module, plan: NetworkPlan, thresholds: dict[str, torch.Tensor], config: ConversionConfig
) -> SpikingModel:
    """Replace activations by IF neurons, finalize pools and the output layer, wrap the network."""
    _replace_activations(net, plan, thresholds, config)
    _finalize(net, plan)
    # conv weights take the layout of neurocuda.snn.layout (the NIR executor's), whatever the ANN
    # trained with: a conv rounds differently on CPU in another layout
    return SpikingModel(net, config.input_shape).eval().requires_grad_(False)


def _first_images(
    data: Iterable | None, config: ConversionConfig, device: torch.device
) -> torch.Tensor:
    if data is None:
        raise ConversionError(
            "conversion.correction needs calibration data (images): pass a data loader, or turn "
            "it off with conversion.correction.timesteps=0."
        )
    images = list(first_images(data, config.correction_batches))
    if not images:
        raise ConversionError("conversion.correction got an empty data loader.")
    for batch in images:
        check_image_shape(batch, config.input_shape)
    return torch.cat(images).to(device).contiguous()


def _thresholds(
    net: nn.Module, plan: NetworkPlan, data: Iterable | None, config: ConversionConfig
) -> dict[str, torch.Tensor]:
    relu, qcfs = split_by_kind(net, list(plan.activations))
    thresholds = qcfs_thresholds(net, qcfs)
    shifts = {net.get_submodule(name).shift for name in qcfs} - {config.v_init}
    if shifts:
        log.warning(
            "QCFS layers trained with shift %s, converted with conversion.v_init=%s: the SNN's "
            "initial membrane does not match the quantizer, which costs accuracy at low T; set "
            "conversion.v_init to the shift unless you are measuring the mismatch.",
            sorted(shifts), config.v_init,
        )  # fmt: skip
    if relu:
        if data is None:
            raise ConversionError(
                f"ReLU layers {relu[:3]}... need calibration data to set thresholds: pass a data "
                "loader (or train with model.activation=qcfs)."
            )
        thresholds |= calibrate_relu_thresholds(
            net,
            relu,
            data,
            config.calibration_batches,
            config.percentile,
            config.per_channel,
            config.input_shape,
        )
    return thresholds


def _replace_activations(
    net: nn.Module, plan: NetworkPlan, thresholds: dict[str, torch.Tensor], config: ConversionConfig
) -> None:
    for name, shape in plan.activations.items():
        theta = thresholds[name].float().cpu()
        if theta.dim() == 1:  # per channel: broadcast over one sample's [C, H, W] or [C]
            theta = theta.reshape(-1, *([1] * (len(shape) - 1)))
        neuron = IFNeuron(theta, theta * config.v_init, config.reset)
        net.set_submodule(name, SpikingActivation(neuron, Scale(theta)))


def _finalize(net: nn.Module, plan: NetworkPlan) -> None:
    for name, in_shape in plan.adaptive_pools.items():
        out = nn.modules.utils._pair(net.get_submodule(name).output_size)
        size = tuple(in_shape[-2:])
        if any(o is None or s % o for s, o in zip(size, out, strict=True)):
            raise ConversionError(
                f"AdaptiveAvgPool2d {name!r} maps {size} to {out}, which is not a fixed average "
                "pool; use nn.AvgPool2d or an output size dividing the input."
            )
        kernel = tuple(s // o for s, o in zip(size, out, strict=True))
        log.info("AdaptiveAvgPool2d %r on a %s input becomes AvgPool2d(%s).", name, size, kernel)
        net.set_submodule(name, nn.AvgPool2d(kernel))
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Dropout):
            net.set_submodule(name, nn.Identity())  # identity in eval mode
    final = net.get_submodule(plan.final_linear)
    net.set_submodule(plan.final_linear, nn.Sequential(final, OutputIntegrator()))
