"""Which Lightning checkpoint files hold which training step (resume and its first epoch end)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The global step a Lightning checkpoint was saved at; None if it does not load (a file cut
    short by a kill, or not a checkpoint)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["global_step"])
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError,
            pickle.UnpicklingError) as error:  # fmt: skip
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
        key = (step, path.name == "last.ckpt")
        if newest is None or key > newest[0]:
            newest = (key, path)
    return newest[1] if newest else None
