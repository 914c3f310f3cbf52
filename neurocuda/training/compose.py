"""Compose the project's Hydra config outside ``train.py`` (scripts, tests, benchmarks)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import neurocuda.training.resolvers  # noqa: F401  (the configs use ${sweep_group:} etc.)

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_train_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """``configs/train.yaml`` with ``overrides``, as ``train.py`` would see it in a single run.

    Sets Hydra's runtime (output dir, cwd) so that ``${hydra:...}`` interpolations resolve, and
    creates ``output_dir``.
    """
    output_dir = Path(output_dir)
    os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))  # paths.root_dir
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(CONFIG_DIR.parent)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


SAVED_CONFIG_KEYS = ("task_name", "train", "test", "data", "model", "trainer", "callbacks", "paths")
"""Top-level keys every run's saved config holds (``paths`` last: a file cut short lacks it)."""


def _damaged(path: Path, why: str) -> ValueError:
    return ValueError(
        f"resume=true but {path} is damaged ({why}): start a new run from the killed run's newest "
        "checkpoint instead (python train.py <its overrides> ckpt_path=RUN_DIR/checkpoints/"
        "last.ckpt)."
    )


def saved_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The config the run in ``run_dir`` started with (Hydra's ``.hydra/config.yaml``), set to
    resume; ``overrides`` given on the resuming command line are ignored with a warning (the run
    continues exactly as it started)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume=true but {path} does not exist: point hydra.run.dir at the killed run's "
            "directory (python train.py hydra.run.dir=RUN_DIR resume=true), or start from a "
            "checkpoint with ckpt_path=FILE.ckpt."
        )
    ignored = [o for o in overrides if o.split("=")[0].lstrip("+~") != "resume"]
    if ignored:
        log.warning("resume=true continues with %s; ignoring overrides %s", path, ignored)
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as error:
        raise _damaged(path, " ".join(str(error).split())) from error
    missing = [k for k in SAVED_CONFIG_KEYS if not isinstance(cfg, DictConfig) or k not in cfg]
    if missing:  # Hydra writes the file without fsync: a crash can leave it empty or cut short
        raise _damaged(path, f"no {', '.join(missing)}")
    cfg.resume = True
    OmegaConf.set_struct(cfg, True)
    return cfg
