"""Checkpoint files: written so they cannot be torn, checked before they are read, and which one
holds which training step (resume and its first epoch end)."""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from neurocuda.files import atomic_write, atomic_write_bytes, read_checkpoint, verify_checkpoint

log = logging.getLogger(__name__)

LAST = "last.ckpt"  # the name of the every-epoch checkpoint (configs/callbacks/default.yaml)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with our file guarantees (``trainer.plugins``, trainer YAML).

    Lightning's own save stages the file in ``TMPDIR`` and moves it, a non-atomic copy when
    ``TMPDIR`` is another file system (a killed or full-disk copy leaves a truncated checkpoint),
    and ``torch.save`` on a full disk raises a bare ``RuntimeError``. Here the bytes are serialised
    in memory (as Lightning does) and written with :func:`neurocuda.files.atomic_write_bytes`:
    temp file beside the target, fsync, rename; a full or read-only disk raises ``WriteError``
    naming the path. Loading checks the file's CRC-32s first (:func:`verify_checkpoint`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options: {storage_options}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer())

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, **kwargs: Any) -> Any:
        verify_checkpoint(path)
        return super().load_checkpoint(path, map_location=map_location, **kwargs)


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The global step a Lightning checkpoint was saved at; None if it does not load (a file cut
    short by a kill, damaged, or not a checkpoint)."""
    try:
        checkpoint = read_checkpoint(path, map_location="cpu", mmap=True)
        return int(checkpoint["global_step"])
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as error:
        log.warning("%s does not load as a checkpoint (%s).", path, error)
        return None


def newest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The ``*.ckpt`` in ``directory`` saved at the highest global step that loads (``last.ckpt``
    on a tie), or None."""
    newest: tuple[tuple[int, bool], Path] | None = None
    for path in sorted(Path(directory).glob("*.ckpt")):
        step = checkpoint_step(path)
        if step is None:
            continue
        key = (step, path.name == LAST)
        if newest is None or key > newest[0]:
            newest = (key, path)
    return newest[1] if newest else None


def restore_last_checkpoint(newest: Path) -> Path:
    """Make ``last.ckpt`` hold ``newest``'s state again and return its path.

    A run killed between an epoch's best checkpoint and its ``last.ckpt`` leaves ``last.ckpt`` an
    epoch behind; resuming from ``newest`` alone would keep it stale forever, since Lightning saves
    ``last.ckpt`` again only after the next epoch. ``newest`` is copied (atomically) onto
    ``last.ckpt``, which is what the uninterrupted run wrote next. Nothing happens when ``newest``
    is ``last.ckpt`` or the run keeps no ``last.ckpt``.
    """
    last = newest.with_name(LAST)
    if newest.name == LAST or not last.exists():
        return newest
    log.info("%s is behind %s (killed between the two writes): restoring it.", last, newest.name)
    atomic_write(last, lambda tmp: shutil.copyfile(newest, tmp))
    return last


def finetune_hyperparameters(checkpoint: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The hyperparameters of a checkpoint the SNN fine-tuning stage wrote (an
    ``SNNFinetuneModule``'s: a spiking network, not an ANN to convert); None for another."""
    saved = read_checkpoint(checkpoint, map_location="cpu").get("hyper_parameters", {})
    return saved if "structure" in saved else None


def is_finetune_checkpoint(checkpoint: str | os.PathLike[str]) -> bool:
    """Whether ``checkpoint`` was written by the SNN fine-tuning stage."""
    return finetune_hyperparameters(checkpoint) is not None


def refuse_finetune_checkpoint(checkpoint: str | os.PathLike[str], setting: str) -> None:
    """Raise ``ValueError`` naming ``setting`` when ``checkpoint`` is a fine-tuned SNN's where an
    ANN's is needed (it failed late, with ``KeyError: 'loss'`` from the ANN module's loader)."""
    if is_finetune_checkpoint(checkpoint):
        raise ValueError(
            f"{setting}={checkpoint} is a fine-tuned SNN's checkpoint; this needs an ANN's (a "
            "run's checkpoints/epoch_*.ckpt). Fine-tuned SNNs: scripts/verify_nir.py "
            "--checkpoint, scripts/layer_errors.py."
        )
