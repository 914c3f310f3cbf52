"""The GPU data path (training batches assembled on the device), run here on CPU tensors: it
gives the CPU loader's batches, crops and flips with the same distribution, and trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from neurocuda.batches import batch_images
from neurocuda.data import CIFAR10DataModule
from neurocuda.data.dataset import ImageArrayDataset, IndexBatch
from train import train

PAD = 4
POSITIONS = (2 * PAD + 1) ** 2  # 81 crop offsets


def _datamodule(archive: Path, cache: Path, on_device: bool) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(
        source="jpeg",
        archive=str(archive),
        cache_dir=str(cache),
        val_size=40,
        batch_size=32,
        seed=5,
        on_device=on_device,
    )
    dm.setup()
    return dm


def _epoch(dm: CIFAR10DataModule, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does before every training epoch
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


def test_device_path_gives_the_cpu_loaders_batches(tiny_archive: Path, tmp_path: Path) -> None:
    """Same order and the same draws from the per-(seed, epoch) generator: identical batches, so
    exact resume holds on the GPU path too."""
    cpu = _datamodule(tiny_archive, tmp_path, on_device=False)
    device = _datamodule(tiny_archive, tmp_path, on_device=True)
    assert isinstance(next(iter(device.train_dataloader())), IndexBatch)
    for epoch in (0, 3):
        expected, got = _epoch(cpu, epoch), _epoch(device, epoch)
        assert len(got) == len(expected) == 200 // 32
        for (x, y), (gx, gy) in zip(expected, got, strict=True):
            assert gx.dtype == torch.float32 and torch.equal(gx, x) and torch.equal(gy, y)
    assert not torch.equal(_epoch(device, 0)[0][0], _epoch(device, 1)[0][0])
    assert device._device_train is not None  # the images were copied for the device once
    # evaluation and calibration batches stay (x, y) tensors from the CPU loader
    assert isinstance(next(iter(device.calibration_dataloader())), list | tuple)
    assert isinstance(next(iter(device.val_dataloader())), list | tuple)


def _position_images(count: int) -> np.ndarray:
    """Images whose channel 0 holds the row number + 1 and channel 1 the column number + 1."""
    grid = np.zeros((32, 32, 3), dtype=np.uint8)
    grid[..., 0] = np.arange(1, 33)[:, None]
    grid[..., 1] = np.arange(1, 33)[None, :]
    return np.broadcast_to(grid, (count, 32, 32, 3)).copy()


def _offsets_and_flips(dataset: ImageArrayDataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop offset (dy, dx) and flip of each augmented image, read back from its pixels."""
    offsets, flips = [], []
    for start in range(0, count, 1000):
        indices = list(range(start, min(start + 1000, count)))
        batch = dataset.__getitems__(indices)
        if isinstance(batch, IndexBatch):  # the GPU path, here on CPU tensors
            batch = dataset.to("cpu").assemble(batch.index, batch.draws)
        x = (batch[0] * dataset.std + dataset.mean).round().to(torch.int64)  # back to 0..255
        row, col, col_next = x[:, 0, 16, 16], x[:, 1, 16, 16], x[:, 1, 16, 17]
        flip = col_next < col  # columns run backwards in a flipped image
        dy = row - (16 - PAD + 1)  # output row 16 shows input row 16 + dy - PAD
        dx = torch.where(flip, col - (15 - PAD + 1), col - (16 - PAD + 1))
        offsets.append((dy * (2 * PAD + 1) + dx).numpy())
        flips.append(flip.numpy())
    return np.concatenate(offsets), np.concatenate(flips)


@pytest.mark.parametrize("deferred", [False, True], ids=["cpu-loader", "device-path"])
def test_crops_are_uniform_over_81_offsets_and_half_are_flipped(deferred: bool) -> None:
    count = 200 * POSITIONS
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    dataset = ImageArrayDataset(
        _position_images(count), np.zeros(count, dtype=np.int64), mean, std, augment=True
    )
    dataset.generator = torch.Generator().manual_seed(11 + deferred)  # independent samples
    dataset.deferred = deferred
    offsets, flips = _offsets_and_flips(dataset, count)
    counts = np.bincount(offsets, minlength=POSITIONS)
    assert len(counts) == POSITIONS and counts.min() > 0  # every one of the 81 offsets, no other
    expected = count / POSITIONS
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(0.999, POSITIONS - 1)  # uniform (fails 1 in 1000 by chance)
    assert abs(flips.mean() - 0.5) < 5 * 0.5 / np.sqrt(count)


def test_normalization_is_identical_on_both_paths(tiny_datamodule: CIFAR10DataModule) -> None:
    train_set = tiny_datamodule.datasets["train"]
    train_set.augment = False
    index = torch.arange(16)
    cpu_x, cpu_y = train_set.__getitems__(index.tolist())
    dev_x, dev_y = train_set.to("cpu").assemble(index, None)
    assert torch.equal(cpu_x, dev_x) and torch.equal(cpu_y, dev_y)
    mean = torch.tensor(tiny_datamodule.hparams.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny_datamodule.hparams.std).view(1, 3, 1, 1)
    reference = (train_set.images[:16].float() / 255 - mean) / std
    torch.testing.assert_close(dev_x, reference)


def test_auto_uses_the_device_path_only_off_the_cpu(tiny_datamodule: CIFAR10DataModule) -> None:
    class Strategy:
        root_device = torch.device("cpu")

    class Trainer:
        strategy = Strategy()

    assert not tiny_datamodule.assembles_on_device()  # no trainer
    tiny_datamodule.trainer = Trainer()
    assert not tiny_datamodule.assembles_on_device()
    Strategy.root_device = torch.device("cuda")  # nothing is moved: only the choice is read
    assert tiny_datamodule.assembles_on_device()
    tiny_datamodule.hparams.on_device = False
    assert not tiny_datamodule.assembles_on_device()
    with pytest.raises(ValueError, match=r"data\.on_device='gpu': use auto, true or false"):
        CIFAR10DataModule(on_device="gpu")


def test_train_py_runs_the_device_path_on_the_cpu(train_cfg, monkeypatch) -> None:
    """train.py with the GPU data path forced on the CPU trains like the CPU loader, batch for
    batch (the same training loss)."""
    assembled = []
    original = CIFAR10DataModule.on_after_batch_transfer

    def spy(self, batch, dataloader_idx):
        assembled.append(isinstance(batch, IndexBatch))
        return original(self, batch, dataloader_idx)

    monkeypatch.setattr(CIFAR10DataModule, "on_after_batch_transfer", spy)
    on_device = train(train_cfg("~conversion", "data.on_device=true", "test=false"))
    assert assembled.count(True) == 3  # limit_train_batches=3
    assembled.clear()
    on_cpu = train(train_cfg("~conversion", "data.on_device=false", "test=false"))
    assert assembled.count(True) == 0
    assert on_device["train/loss_epoch"] == on_cpu["train/loss_epoch"]


def test_batch_images_counts_image_and_index_batches_alike() -> None:
    images = torch.zeros(5, 3, 32, 32)
    assert batch_images((images, torch.zeros(5))) == 5
    assert batch_images([images, torch.zeros(5)]) == 5
    assert batch_images(images) == 5
    assert batch_images(IndexBatch(torch.arange(7), None)) == 7
