"""CIFAR-10 LightningDataModule: offline JPEG archive, torchvision batches, or download.

Training batches are assembled on the CPU by the DataLoader, or, on a GPU (``on_device``), on
the GPU itself: the uint8 training images are copied there once, the loader yields only indices
and augmentation draws (:class:`~neurocuda.data.dataset.IndexBatch`), and
:meth:`CIFAR10DataModule.on_after_batch_transfer` gathers, crops, flips and normalizes the whole
batch there. The draws come from the same per-epoch generator either way, so both paths give the
same batches and a resumed run the same epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sized
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from neurocuda.data.dataset import ImageArrayDataset, IndexBatch, balanced_subset, collate_batch
from neurocuda.data.sources import load_cifar10
from neurocuda.normalization import CIFAR10_MEAN, CIFAR10_STD


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's draws that depends on ``seed`` and ``epoch`` only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochShuffle(Sampler[int]):
    """A random order of the training set that is a function of (seed, epoch) only; under DDP
    (``world_size`` > 1) process ``rank``'s share of it.

    Lightning calls :meth:`set_epoch` before every training epoch. The generator restarts there,
    and the DataLoader draws its worker seeds from it (without workers, the augmentation draws from
    it too), so a resumed run shuffles and augments every epoch exactly as an uninterrupted one.
    Under DDP every process draws the same order and takes every ``world_size``-th index from
    ``rank`` on (the order wrapped to equal shares), then reseeds the generator with its rank, so
    processes augment independently. Written by hand because Lightning's ``DistributedSampler``,
    which it puts in place of a ``RandomSampler``, never calls this :meth:`set_epoch`: resumed
    DDP runs drew other augmentations, and every process the same ones.
    """

    def __init__(self, data_source: Sized, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
        self.size = len(data_source)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=self.generator)
        if self.world_size > 1:
            order = order.repeat(2)[: len(self) * self.world_size][self.rank :: self.world_size]
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch) + 1 + self.rank)
        yield from order.tolist()


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 with a seeded validation split carved from train and optional subsets.

    ``seed`` draws the split and subsets, and the training order and augmentation unless
    ``shuffle_seed`` is given: then that seeds them alone, so a rerun with another
    ``shuffle_seed`` keeps the validation split (e.g. to measure run-to-run spread).

    ``on_device``: where training batches are assembled. ``"auto"``: on the trainer's device when
    it is not the CPU; ``True``: on the device the batch is moved to, also the CPU (what the GPU
    path computes, testable without one); ``False``: the CPU DataLoader.
    """

    num_classes = 10

    def __init__(
        self,
        source: str = "auto",
        root: str = "data",
        archive: str | None = None,
        download: bool = False,
        cache_dir: str | None = None,
        val_size: int = 5000,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        cutout: int = 0,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        seed: int = 0,
        on_device: bool | str = "auto",
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        if on_device not in ("auto", True, False):
            raise ValueError(f"data.on_device={on_device!r}: use auto, true or false.")
        if not 0 <= cutout <= 32:
            raise ValueError(f"data.cutout={cutout}: the erased square's side, 0 (off) to 32.")
        self.save_hyperparameters(logger=False)
        self.datasets: dict[str, ImageArrayDataset] = {}
        self._device_train: ImageArrayDataset | None = None

    def prepare_data(self) -> None:
        """Download or decode once (rank 0); the cache makes ``setup`` fast on every rank."""
        self._load()

    def _load(self) -> dict:
        hp = self.hparams
        cache_dir = hp.cache_dir or str(Path(hp.root) / "cache")
        return load_cifar10(hp.source, hp.root, hp.archive, hp.download, cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        splits = self._load()
        train, test = splits["train"], splits["test"]
        if not 0 <= hp.val_size < len(train.labels):
            raise ValueError(f"data.val_size={hp.val_size} must be in [0, {len(train.labels)}).")
        order = np.random.default_rng(hp.seed).permutation(len(train.labels))
        val_idx, train_idx = order[: hp.val_size], order[hp.val_size :]
        train_idx = train_idx[balanced_subset(train.labels[train_idx], hp.train_subset, hp.seed)]
        val_idx = val_idx[balanced_subset(train.labels[val_idx], hp.val_subset, hp.seed + 1)]
        test_idx = balanced_subset(test.labels, hp.test_subset, hp.seed + 2)
        norm = {"mean": hp.mean, "std": hp.std}
        self.datasets = {
            "train": ImageArrayDataset(
                train.images[train_idx],
                train.labels[train_idx],
                augment=hp.augment,
                cutout=hp.cutout,
                **norm,
            ),
            "val": ImageArrayDataset(train.images[val_idx], train.labels[val_idx], **norm),
            "test": ImageArrayDataset(test.images[test_idx], test.labels[test_idx], **norm),
        }

    def _loader(self, split: str, batch_size: int, order: EpochShuffle | None = None) -> DataLoader:
        if not self.datasets:
            self.setup()
        shuffle = order is not None
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            sampler=order,
            drop_last=shuffle and len(self.datasets[split]) > batch_size,
            num_workers=self.hparams.num_workers,
            # a shuffled loader restarts its workers every epoch: their seeds come from the epoch
            persistent_workers=self.hparams.num_workers > 0 and not shuffle,
            generator=order.generator if shuffle else None,
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.datasets:
            self.setup()
        train = self.datasets["train"]
        hp = self.hparams
        trainer = self.trainer  # under DDP this process's share (trainer=ddp / ddp_cpu keep
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)  # it)
        seed = hp.seed if hp.shuffle_seed is None else hp.shuffle_seed
        order = EpochShuffle(train, seed, rank, world)
        if self.hparams.num_workers == 0:  # workers augment with their own, per-epoch seeded RNG
            train.generator = order.generator
        train.deferred = self.assembles_on_device()
        return self._loader("train", self.hparams.batch_size, order)

    def assembles_on_device(self) -> bool:
        """Whether training batches are assembled where they land (see ``on_device``)."""
        if self.hparams.on_device == "auto":
            trainer = self.trainer
            return trainer is not None and trainer.strategy.root_device.type != "cpu"
        return bool(self.hparams.on_device)

    def on_after_batch_transfer(self, batch: object, dataloader_idx: int) -> object:
        """Assemble an :class:`IndexBatch` on its device from the training images copied there
        once; other batches pass unchanged."""
        if not isinstance(batch, IndexBatch):
            return batch
        device = batch.index.device
        if self._device_train is None or self._device_train.images.device != device:
            self._device_train = self.datasets["train"].to(device)
        return self._device_train.assemble(batch.index, batch.draws)

    def calibration_dataloader(self) -> DataLoader:
        """Training images without augmentation in a fixed (class-interleaved) order.

        Conversion calibrates on these, so converting a checkpoint twice (the training callback,
        then ``scripts/verify_nir.py``) gives the same SNN bit for bit.
        """
        if not self.datasets:
            self.setup()
        calibration = copy.copy(self.datasets["train"])  # shares the image tensors
        calibration.augment = calibration.deferred = False
        self.datasets["calibration"] = calibration
        return self._loader("calibration", self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size or self.hparams.batch_size)
