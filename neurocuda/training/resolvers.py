"""OmegaConf resolvers used by the configs (registered on import)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def sweep_group() -> str:
    """The sweep's directory name in a multirun (W&B group of all its jobs), else ""."""
    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def job_label() -> str | None:
    """``<job num>: <overrides>`` in a multirun (a readable W&B run name), else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    job = HydraConfig.get().job
    return f"{job.num}: {job.override_dirname}"


def fast_precision(accelerator: str = "cpu", without_bf16: str = "16-mixed") -> str:
    """``bf16-mixed`` where the device computes bfloat16 natively, else ``32-true`` (on a GPU
    without bfloat16: ``without_bf16``, e.g. ``32-true`` for the SNN fine-tuning stage, which
    takes no float16).

    On a CPU without AVX512-BF16/AMX (e.g. AMD Zen 3) bfloat16 is emulated: a ResNet-20 training
    step measured 8.6x slower than float32 there, a ResNet-20 SNN fine-tuning step at T=4 6.6x
    (docs/results.md).
    """
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else without_bf16
    return "bf16-mixed" if _cpu_has_bf16() else "32-true"


def hydra_output_subdir(resume: bool) -> str | None:
    """Where Hydra saves the composed config in the run directory: ``.hydra``; none when resuming,
    so the run's own saved config (which ``train.py`` resumes with) is kept."""
    return None if resume else ".hydra"


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split()
    except OSError:  # not Linux: stay with float32, always correct
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("job_label", job_label, replace=True)
OmegaConf.register_new_resolver("fast_precision", fast_precision, replace=True)
OmegaConf.register_new_resolver("hydra_output_subdir", hydra_output_subdir, replace=True)
