"""Checkpoint -> SNN and SNN -> NIR graph: the one path every script and the deploy fallback take.

A checkpoint written by ``train.py`` holds the model's and the datamodule's settings, so it is
converted on the same calibration images as during training and gives the same SNN bit for bit
(``scripts/verify_nir.py`` relies on it). Scripts compose the project's Hydra config with
:func:`neurocuda.training.compose.compose_train_config` and pass ``cfg`` and their overrides here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import hydra
import nir
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.data import CheckpointDataError, CIFAR10DataModule, datamodule_from_checkpoint
from neurocuda.devices import resolve_device
from neurocuda.files import verify_checkpoint
from neurocuda.nir import Profile, export
from neurocuda.snn import SpikingModel
from neurocuda.training import ClassifierModule
from neurocuda.training.checkpoints import refuse_finetune_checkpoint

log = logging.getLogger(__name__)


@dataclass
class CheckpointSNN:
    """A checkpoint's ANN (eval mode), its SNN, the data it was calibrated on and the settings."""

    ann: nn.Module
    snn: SpikingModel
    datamodule: CIFAR10DataModule
    settings: ConversionConfig


def override_keys(overrides: list[str], prefix: str) -> list[str]:
    """Keys under ``prefix.`` that command-line Hydra ``overrides`` set (``+``/``~`` stripped)."""
    keys = (item.lstrip("+~").split("=", 1)[0] for item in overrides)
    return [key for key in keys if key.startswith(prefix + ".")]


def checkpoint_datamodule(
    checkpoint: str | os.PathLike[str], cfg: DictConfig | None = None, overrides: list[str] = ()
) -> CIFAR10DataModule:
    """The checkpoint's own data settings with the command line's ``data.*`` overrides; without
    saved settings (not written by ``train.py``), ``cfg.data`` with a warning."""
    changed = {}
    if cfg is not None:
        changed = {k[5:]: OmegaConf.select(cfg, k) for k in override_keys(list(overrides), "data")}
    try:
        return datamodule_from_checkpoint(checkpoint, **changed)
    except CheckpointDataError as error:
        if cfg is None:
            raise
        log.warning("%s Using the configured data settings.", error)
        return hydra.utils.instantiate(cfg.data)


def settings_with_overrides(
    settings: ConversionConfig, cfg: DictConfig, overrides: list[str]
) -> ConversionConfig:
    """``settings`` (e.g. read from a NIR file) with the command line's ``conversion.*`` keys."""
    group = OmegaConf.create(settings.as_group())
    for key in override_keys(overrides, "conversion"):
        OmegaConf.update(group, key.split(".", 1)[1], OmegaConf.select(cfg, key))
    return ConversionConfig.from_group(group, input_shape=settings.input_shape)


def load_ann(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a ``ClassifierModule`` checkpoint, in eval mode, on ``device``
    (:func:`neurocuda.devices.resolve_device`: ``auto`` is the GPU when there is one)."""
    checked = verify_checkpoint(checkpoint)
    refuse_finetune_checkpoint(checked, "checkpoint")
    module = ClassifierModule.load_from_checkpoint(checked, map_location=resolve_device(device))
    return module.net.eval()


def snn_from_checkpoint(
    checkpoint: str | os.PathLike[str],
    settings: ConversionConfig | None = None,
    datamodule: CIFAR10DataModule | None = None,
    device: str | torch.device = "cpu",
) -> CheckpointSNN:
    """Convert the ANN of ``checkpoint`` with ``settings`` (default: the ``conversion`` group's
    defaults) on its calibration images (``datamodule``: default the checkpoint's own)."""
    datamodule = datamodule or datamodule_from_checkpoint(checkpoint)
    datamodule.prepare_data()
    datamodule.setup("fit")
    ann = load_ann(checkpoint, device)
    sample = next(iter(datamodule.calibration_dataloader()))[0]
    settings = replace(settings or ConversionConfig(), input_shape=tuple(sample.shape[1:]))
    snn = convert(ann, datamodule.calibration_dataloader(), settings)
    return CheckpointSNN(ann, snn, datamodule, settings)


def refuse_conversion_overrides(checkpoint: str | os.PathLike[str], overrides: list[str]) -> None:
    """A fine-tuned SNN's checkpoint holds no ANN to convert: ``conversion.*`` keys among the
    command line's Hydra ``overrides`` cannot change it, so they fail with the fix named."""
    changed = override_keys(list(overrides), "conversion")
    if changed:
        raise ValueError(
            f"{checkpoint} is a fine-tuned SNN, not an ANN to convert: {', '.join(changed)} "
            "cannot change it; drop these overrides."
        )


def export_snn(
    snn: SpikingModel,
    settings: ConversionConfig,
    sample: torch.Tensor,
    profile: Profile = "faithful",
    **metadata: Any,
) -> nir.NIRGraph:
    """``snn`` as a NIR graph whose metadata records ``settings`` (read back by
    :meth:`ConversionConfig.from_metadata`) and ``metadata``."""
    device = next(snn.buffers()).device
    return export(snn, sample[:1].to(device), profile, {**settings.as_metadata(), **metadata})


def nir_from_checkpoint(
    checkpoint: str | os.PathLike[str],
    settings: ConversionConfig | None = None,
    datamodule: CIFAR10DataModule | None = None,
    profile: Profile = "faithful",
    device: str | torch.device = "cpu",
) -> tuple[nir.NIRGraph, CheckpointSNN]:
    """:func:`snn_from_checkpoint`, exported with :func:`export_snn`."""
    converted = snn_from_checkpoint(checkpoint, settings, datamodule, device)
    sample = next(iter(converted.datamodule.calibration_dataloader()))[0]
    name = os.path.basename(checkpoint)
    graph = export_snn(converted.snn, converted.settings, sample, profile, checkpoint=name)
    return graph, converted
