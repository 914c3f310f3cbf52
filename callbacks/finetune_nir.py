"""Lightning glue: every checkpoint of the SNN fine-tuning stage gets a verified ``.nir`` file."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.nir_round_trip import NIRRoundTrip
from callbacks.snn_conversion import saved_this_step
from neurocuda.snn import Encoding, SpikingModel
from neurocuda.training import SNNFinetuneModule
from neurocuda.training.snn_finetune import load_finetuned


class FinetuneNIRRoundTrip(NIRRoundTrip):
    """At each epoch end of :class:`~neurocuda.training.SNNFinetuneModule` training, export the
    fine-tuned SNN as ``<checkpoint>.nir`` beside every checkpoint saved at this step, execute the
    file and prove it equal to the native SNN (``finetune/nir/max_abs_diff`` must be 0.0).

    Compared at ``timesteps`` (default: the module's evaluation T) on ``num_images`` fixed
    validation images. Checkpoints save at validation end, before this hook (see setup). The file
    is exported from the network the checkpoint holds, read back from it: the module's weights
    unless a callback saved others (:class:`~callbacks.weight_average.SNNWeightAverage`: the
    average).
    """

    metric_prefix = "finetune/nir"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, SNNFinetuneModule):
            raise TypeError(
                f"FinetuneNIRRoundTrip runs with SNNFinetuneModule, got {type(pl_module).__name__}."
            )
        for ckpt in trainer.checkpoint_callbacks:
            if isinstance(ckpt, ModelCheckpoint) and ckpt._save_on_train_epoch_end is None:
                ckpt._save_on_train_epoch_end = False

    def _saved_snn(
        self, trainer: L.Trainer, checkpoint: str
    ) -> tuple[SpikingModel, list[int], Encoding]:
        module = load_finetuned(checkpoint)
        timesteps = self.timesteps or module.eval_timesteps
        return module.spiking_model(), timesteps, module.hparams.encoding

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: SNNFinetuneModule) -> None:
        checkpoints = saved_this_step(trainer)
        if not checkpoints:
            return  # no checkpoint at this step (not a new best): nothing to annotate
        hparams = pl_module.hparams
        timesteps = self.timesteps or pl_module.eval_timesteps
        metadata = {
            # the conversion's settings say how the thresholds started; the keys below, which
            # replace its encoding and T's, what this stage trained and checked the file at
            **(hparams.metadata or {}),
            "encoding": hparams.encoding,
            "timesteps": ",".join(map(str, timesteps)),
            "epoch": int(trainer.current_epoch),
            "checkpoint": ",".join(Path(p).name for p in checkpoints),
            "finetune_timesteps": int(hparams.timesteps),
            "finetune_channel_thresholds": str(bool(hparams.get("channel_thresholds"))).lower(),
        }
        paths = [Path(p).with_suffix(".nir") for p in checkpoints]
        saved = load_finetuned(checkpoints[0], pl_module.device).spiking_model()
        self._export_and_check(
            trainer, pl_module, saved, paths, timesteps, hparams.encoding, metadata,
            trainer.current_epoch,
        )  # fmt: skip
