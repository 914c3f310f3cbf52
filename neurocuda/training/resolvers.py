"""OmegaConf resolvers used by the configs (registered on import)."""

from __future__ import annotations

from pathlib import Path

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


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("job_label", job_label, replace=True)
