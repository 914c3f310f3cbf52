"""ModelCheckpoint whose deleted checkpoints take their ``.nir`` files with them."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class CheckpointWithNIR(ModelCheckpoint):
    """A ``ModelCheckpoint`` that also deletes ``<checkpoint>.nir`` when it deletes a checkpoint
    (``save_top_k`` replacing a worse one), so no orphaned NIR file is left behind, and names the
    files it wrote at a step (:meth:`written_at`): with ``save_top_k`` > 1 its
    ``best_model_path`` is the best file kept, often an older one. A run directory moved or
    copied elsewhere resumes with its files where they are now (:meth:`load_state_dict`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._written: tuple[int, list[str]] = (-1, [])
        self._restored_here = False

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        step, files = self._written
        self._written = (trainer.global_step, [*files, filepath] if step == trainer.global_step
                         else [filepath])  # fmt: skip

    def written_at(self, step: int) -> list[str]:
        """The files this callback wrote at global step ``step`` in this process (none before a
        restore)."""
        return list(self._written[1]) if self._written[0] == step else []

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Lightning's one hook for deletions (ModelCheckpoint calls it for every file it drops)
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            Path(filepath).with_suffix(".nir").unlink(missing_ok=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore; when the saved folder differs from this one but its files (best, top-k, last)
        are all here, the run directory was moved or copied: restore them at their new place.
        Lightning kept only the old ``best_model_path`` then, so a resumed run tested and
        converted the old folder's file (or failed on it) and wrote a stray ``.nir``."""
        saved, here = state_dict.get("dirpath"), self.dirpath
        if saved and here and Path(saved) != Path(here):

            def moved(path: str | None) -> str | None:
                inside = path and Path(path).parent == Path(saved)
                return str(Path(here) / Path(path).name) if inside else path

            paths = ("best_model_path", "kth_best_model_path", "last_model_path")
            renamed = {key: moved(state_dict.get(key)) for key in paths}
            renamed["best_k_models"] = {
                moved(path): score for path, score in state_dict.get("best_k_models", {}).items()
            }
            files = [*renamed["best_k_models"], *(renamed[k] for k in paths)]
            if all(Path(f).is_file() for f in files if f):
                state_dict = {**state_dict, **renamed, "dirpath": here}
        self._restored_here = bool(here) and Path(state_dict.get("dirpath") or "") == Path(here)
        super().load_state_dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After a restore of this folder's state: delete the checkpoints of this callback's name
        pattern the state no longer lists, with their ``.nir``, and ``.nir`` files whose
        checkpoint is gone. Lightning drops a superseded best from its list before saving the new
        one and deletes the file after: a kill in between left it (and its ``.nir``) for good."""
        if not (self._restored_here and trainer.is_global_zero and self.dirpath):
            return
        if self.monitor is None and self.save_top_k != 1:  # Lightning lists none of those files
            return
        parts = re.split(r"\{[^}]*\}", self.filename or "")
        pattern = re.compile(".+".join(map(re.escape, parts)) + r"\.(?:ckpt|nir)")
        kept = {*self.best_k_models, self.best_model_path, self.last_model_path} - {""}
        kept = {Path(p).with_suffix("").resolve() for p in kept}
        for file in sorted(Path(self.dirpath).iterdir()):
            orphan = file.with_suffix("").resolve() not in kept
            if pattern.fullmatch(file.name) and orphan:
                log.warning("Removing %s: left by a run killed while it replaced its best "
                            "checkpoint (no longer in the restored state).", file)  # fmt: skip
                file.unlink()
