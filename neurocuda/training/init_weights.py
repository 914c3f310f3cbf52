"""Start a fit from another run's network weights (``init_from=FILE.ckpt``), e.g. a QCFS ANN
from a trained ReLU one: the optimizer, schedule and epoch count start afresh, unlike
``ckpt_path``, which resumes a fit."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from neurocuda.files import read_lightning_checkpoint
from neurocuda.models.qcfs import QCFS

log = logging.getLogger(__name__)


def check_init_from(cfg: DictConfig) -> Path | None:
    """The ``init_from`` file of a run, checked before any data or training; None when unset or
    when the run resumes (its checkpoint holds the weights)."""
    if not cfg.get("init_from") or cfg.get("resume"):
        return None
    path = Path(cfg.init_from)
    if not cfg.get("train", True):
        raise ValueError(
            f"init_from={path} starts a fit, but train=false: drop init_from, or set train=true."
        )
    if cfg.get("ckpt_path"):
        raise ValueError(
            f"init_from={path} and ckpt_path={cfg.ckpt_path}: ckpt_path resumes a fit (its "
            "weights, optimizer and epoch); init_from starts a new fit from a file's weights. "
            "Set one of them."
        )
    if not path.is_file():
        raise FileNotFoundError(f"init_from={path} does not exist.")
    return path


def load_network_weights(net: torch.nn.Module, path: Path) -> None:
    """Copy the network weights (``net.*``) of ClassifierModule checkpoint ``path`` into ``net``.

    Every parameter and buffer must match by name and shape, except the clip levels of ``net``'s
    QCFS activations when the file has none (a ReLU ANN's): those stay uninitialised and are set
    from the first training batch, as in a fit from scratch.
    """
    state = read_lightning_checkpoint(path, map_location="cpu")["state_dict"]
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    qcfs = {f"{name}.{key}" for name, m in net.named_modules() if isinstance(m, QCFS)
            for key in ("threshold", "initialized")}  # fmt: skip
    missing, unexpected = net.load_state_dict(weights, strict=False)
    problems = [f"missing {k}" for k in missing if k not in qcfs]
    problems += [f"unexpected {k}" for k in unexpected]
    if problems:
        raise ValueError(
            f"init_from={path} does not fit this model ({', '.join(problems[:4])}"
            f"{', ...' if len(problems) > 4 else ''}): use a checkpoint of the same model.arch."
        )
    log.info("Network weights from %s (%d tensors; %d QCFS clip levels set from data).",
             path, len(weights), sum(k.endswith(".threshold") for k in missing))  # fmt: skip
