"""CIFAR10DataModule on a generated archive, on the shared archive, and with data missing."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurocuda.data import (
    CheckpointDataError,
    CIFAR10DataModule,
    CorruptDatasetError,
    DatasetNotFoundError,
    datamodule_from_checkpoint,
)
from neurocuda.data.dataset import ImageArrayDataset, balanced_subset
from neurocuda.data.sources import load_jpeg
from tests.conftest import SHARED_ARCHIVE


def test_tiny_archive_splits_and_batches(tiny_datamodule: CIFAR10DataModule) -> None:
    sizes = {k: len(v) for k, v in tiny_datamodule.datasets.items()}
    assert sizes == {"train": 200, "val": 40, "test": 80}
    x, y = next(iter(tiny_datamodule.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    xv, _ = next(iter(tiny_datamodule.val_dataloader()))
    assert abs(float(xv.mean())) < 1.5  # normalized, not raw 0..255


def test_validation_split_is_seeded_and_disjoint(tiny_archive: Path, tmp_path: Path) -> None:
    def val_images(seed: int) -> torch.Tensor:
        dm = CIFAR10DataModule(
            source="jpeg",
            archive=str(tiny_archive),
            cache_dir=str(tmp_path),
            val_size=40,
            seed=seed,
        )
        dm.setup()
        return dm.datasets["val"].images

    assert torch.equal(val_images(0), val_images(0))
    assert not torch.equal(val_images(0), val_images(1))


def test_shuffle_seed_changes_the_training_order_and_keeps_the_split(
    tiny_archive: Path, tmp_path: Path
) -> None:
    def first_batch_and_split(**seeds: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = CIFAR10DataModule(
            source="jpeg", archive=str(tiny_archive), cache_dir=str(tmp_path), val_size=40,
            batch_size=32, **seeds,
        )  # fmt: skip
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        return next(iter(loader))[0], dm.datasets["val"].images

    batch, split = first_batch_and_split(seed=0)
    same_batch, _ = first_batch_and_split(seed=0, shuffle_seed=0)  # null means seed
    other_batch, same_split = first_batch_and_split(seed=0, shuffle_seed=1)
    assert torch.equal(batch, same_batch) and torch.equal(split, same_split)
    assert not torch.equal(batch, other_batch)


def test_cache_makes_second_start_fast(tiny_archive: Path, tmp_path: Path) -> None:
    kwargs = {
        "source": "jpeg",
        "archive": str(tiny_archive),
        "cache_dir": str(tmp_path),
        "val_size": 40,
    }
    CIFAR10DataModule(**kwargs).setup()
    assert len(list(tmp_path.glob("cifar10-jpeg-*.npz"))) == 1
    start = time.perf_counter()
    CIFAR10DataModule(**kwargs).setup()
    assert time.perf_counter() - start < 1.0


def test_a_changed_file_in_an_extracted_folder_is_decoded_again(tiny_archive, tmp_path) -> None:
    """The cache was keyed by the folder's own size and time, which a rewritten image inside
    does not change: later runs read the old pixels."""
    with tarfile.open(tiny_archive) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    folder, cache = tmp_path / "data" / "cifar10-jpeg", tmp_path / "cache"
    first = load_jpeg(folder, cache)
    image = next((folder / "train" / "cat").glob("*.jpg"))
    Image.new("RGB", (32, 32), (255, 255, 255)).save(image, format="JPEG", quality=95)
    os.utime(folder, ns=(folder.stat().st_atime_ns, folder.stat().st_mtime_ns))
    second = load_jpeg(folder, cache)
    assert len(list(cache.glob("cifar10-jpeg-*.npz"))) == 2  # a new key, decoded again
    changed = (first["train"].images != second["train"].images).any(axis=(1, 2, 3))
    assert changed.sum() == 1 and second["train"].images[changed].min() >= 250


def test_augmentation_crops_and_flips_like_reference() -> None:
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    ds = ImageArrayDataset(
        images, np.zeros(4, dtype=np.int64), (0, 0, 0), (1 / 255,) * 3, augment=True
    )
    torch.manual_seed(3)
    out, _ = ds.__getitems__([0, 1, 2, 3])
    torch.manual_seed(3)
    dy, dx = torch.randint(0, 9, (4, 1)), torch.randint(0, 9, (4, 1))
    flip = torch.rand(4, 1) < 0.5
    padded = torch.nn.functional.pad(ds.images[:4], (4, 4, 4, 4))
    for i in range(4):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        ref = ref.flip(-1) if flip[i] else ref
        assert torch.equal(out[i], ref.float())


def test_cutout_erases_one_square_per_image_clipped_at_the_borders() -> None:
    """With pad 0 the crop is the whole image and a flip leaves a constant one unchanged, so
    the zeros of the output are exactly the erased squares; crop and flip draws stay those of a
    run without cutout (drawn first)."""
    images = np.full((64, 32, 32, 3), 7, dtype=np.uint8)
    ds = ImageArrayDataset(
        images, np.zeros(64, dtype=np.int64), (0, 0, 0), (1 / 255,) * 3, augment=True, pad=0
    )
    ds.cutout = 8
    ds.generator = torch.Generator().manual_seed(5)
    out, _ = ds.__getitems__(list(range(64)))
    generator = torch.Generator().manual_seed(5)
    torch.randint(0, 1, (2, 64, 1), generator=generator)  # crop offsets (0 without padding)
    torch.rand(64, 1, generator=generator)  # flips
    centre = torch.randint(0, 32, (64, 2), generator=generator)
    clipped = []
    for i, (cy, cx) in enumerate(centre.tolist()):
        expected = torch.full((3, 32, 32), 7.0)
        expected[:, max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4] = 0.0
        assert torch.equal(out[i], expected)
        clipped.append(int((out[i, 0] == 0).sum()) < 64)
    assert any(clipped) and not all(clipped)  # squares inside and across the borders


def test_cutout_is_identical_on_both_paths() -> None:
    images = np.random.default_rng(1).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    batches = []
    for deferred in (False, True):
        ds = ImageArrayDataset(
            images, np.zeros(16, dtype=np.int64), (0.5,) * 3, (0.25,) * 3, augment=True, cutout=12
        )
        ds.generator, ds.deferred = torch.Generator().manual_seed(2), deferred
        batch = ds.__getitems__(list(range(16)))
        batches.append(ds.to("cpu").assemble(*batch)[0] if deferred else batch[0])
    assert torch.equal(*batches) and (batches[0] == 0).any()


def test_cutout_outside_the_image_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"data\.cutout=40: the erased square's side, 0 \(off\) to 32"
    ):
        CIFAR10DataModule(cutout=40)


def test_every_prefix_of_a_split_is_class_balanced(tiny_datamodule) -> None:
    labels = np.repeat(np.arange(10), 100)  # ordered by class, like the archive
    idx = balanced_subset(labels, 50, seed=0)
    assert len(idx) == 50 and np.bincount(labels[idx]).tolist() == [5] * 10
    assert sorted(balanced_subset(labels, None, seed=0).tolist()) == list(range(1000))
    # the "first N images" of the test loader are not one class
    _, y = next(iter(tiny_datamodule.test_dataloader()))
    assert set(y[:10].tolist()) == set(range(10))


def test_missing_dataset_names_the_ways_to_provide_it(tmp_path: Path) -> None:
    for kwargs in (
        {"source": "jpeg", "archive": str(tmp_path / "nope.tar.gz")},
        {"source": "auto", "archive": str(tmp_path / "nope.tar.gz")},
        {"source": "torchvision"},
    ):
        dm = CIFAR10DataModule(root=str(tmp_path), **kwargs)
        with pytest.raises(DatasetNotFoundError) as err:
            dm.setup()
        message = str(err.value)
        assert "data.source=torchvision data.download=true" in message
        assert "data.archive=PATH" in message


@pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="the shared CIFAR-10 archive is absent")
def test_shared_archive_full_dataset(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(
        source="jpeg",
        archive=str(SHARED_ARCHIVE),
        cache_dir=str(Path("data/cache").resolve()),
        test_subset=1000,
    )
    dm.setup()
    assert len(dm.datasets["train"]) == 45_000 and len(dm.datasets["val"]) == 5_000
    assert np.bincount(dm.datasets["test"].labels.numpy()).tolist() == [100] * 10
    train_mean = dm.datasets["train"].images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(train_mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.005)


def test_datamodule_from_checkpoint_restores_settings_and_applies_overrides(
    tmp_path: Path,
) -> None:
    saved = CIFAR10DataModule(source="jpeg", val_size=40, batch_size=16, seed=3)
    ckpt = tmp_path / "m.ckpt"
    lightning = {"state_dict": {}, "pytorch-lightning_version": "2.5.0"}  # what Lightning writes
    torch.save({**lightning, "datamodule_hyper_parameters": dict(saved.hparams)}, ckpt)
    dm = datamodule_from_checkpoint(ckpt, batch_size=64)
    assert (dm.hparams.val_size, dm.hparams.seed, dm.hparams.source) == (40, 3, "jpeg")
    assert dm.hparams.batch_size == 64
    torch.save(lightning, ckpt)
    with pytest.raises(CheckpointDataError, match="holds no datamodule settings"):
        datamodule_from_checkpoint(ckpt)


def test_cache_on_a_full_disk_warns_and_leaves_nothing(tiny_archive, small_tmpfs, caplog) -> None:
    """The decoded tiny archive (~1 MB) does not fit a 200 KB tmpfs: run on without a cache."""
    splits = load_jpeg(tiny_archive, small_tmpfs)
    assert len(splits["train"].labels) == 240
    assert f"cannot write {small_tmpfs}/cifar10-jpeg-" in caplog.text
    assert "no space left on device; continuing without the cache" in caplog.text
    assert list(small_tmpfs.iterdir()) == []


def test_decoding_progress_reaches_100_percent_of_a_small_archive_and_folder(
    tiny_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress counts the archive's bytes (a folder's files), not CIFAR-10's 60,000 images,
    which a smaller archive never approached (no line at all for this one's 320 images)."""
    load_jpeg(tiny_archive, tmp_path / "a")
    archive_lines = capsys.readouterr().out.splitlines()
    with tarfile.open(tiny_archive) as tar:
        tar.extractall(tmp_path / "folder", filter="data")
    load_jpeg(tmp_path / "folder", tmp_path / "b")
    folder_lines = capsys.readouterr().out.splitlines()
    assert archive_lines and "Decoding" in archive_lines[-1] and " 100% (" in archive_lines[-1]
    assert " kB)" in archive_lines[-1]
    assert folder_lines and " 100% (320/320 files)" in folder_lines[-1]


def test_a_partly_extracted_folder_is_refused(tiny_archive: Path, tmp_path: Path) -> None:
    """Two of ten training classes loaded, trained on and cached without a word."""
    with tarfile.open(tiny_archive) as tar:
        tar.extractall(tmp_path / "folder", filter="data")
    for cls in ("cat", "dog"):
        for image in (tmp_path / "folder" / "cifar10-jpeg" / "train" / cls).iterdir():
            image.unlink()
    with pytest.raises(CorruptDatasetError, match=r"no train images of cat, dog: incomplete"):
        load_jpeg(tmp_path / "folder" / "cifar10-jpeg", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_damaged_cache_is_rebuilt_with_a_warning(tiny_archive, tmp_path, caplog) -> None:
    first = load_jpeg(tiny_archive, tmp_path)
    (cache,) = tmp_path.glob("cifar10-jpeg-*.npz")
    data = cache.read_bytes()
    for damaged in (data[: len(data) // 2], b"garbage", data[:100] + bytes(100) + data[200:]):
        cache.write_bytes(damaged)
        splits = load_jpeg(tiny_archive, tmp_path)
        assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
        assert np.array_equal(splits["test"].images, first["test"].images)
        assert cache.read_bytes() == data  # rewritten whole
        caplog.clear()


def test_damaged_archive_gives_one_error_naming_it_and_the_fix(tiny_archive, tmp_path) -> None:
    data = tiny_archive.read_bytes()
    for name, damaged in (("truncated", data[: len(data) // 2]), ("flipped", _flip(data))):
        archive = tmp_path / f"{name}.tar.gz"
        archive.write_bytes(damaged)
        with pytest.raises(CorruptDatasetError, match=f"{archive} is corrupt or truncated"):
            load_jpeg(archive, tmp_path / "cache")


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def test_epoch_order_and_augmentation_depend_on_seed_and_epoch_only(tiny_datamodule) -> None:
    def epoch(loader, number: int) -> list[torch.Tensor]:
        loader.sampler.set_epoch(number)  # what Lightning does before each training epoch
        return [x for x, _ in loader]

    loader = tiny_datamodule.train_dataloader()
    first, second = epoch(loader, 0), epoch(loader, 1)
    torch.manual_seed(123)  # the global RNG plays no part
    resumed = epoch(tiny_datamodule.train_dataloader(), 1)
    assert all(torch.equal(a, b) for a, b in zip(second, resumed, strict=True))
    assert not torch.equal(first[0], second[0])


def test_ddp_processes_share_one_epoch_order_and_augment_apart() -> None:
    """Lightning put a DistributedSampler in place of EpochShuffle (a RandomSampler): its
    set_epoch was never called, so a resumed DDP run augmented otherwise and every process drew
    the same crops. Now each process takes its share of the (seed, epoch) order itself."""
    from neurocuda.data.cifar10 import EpochShuffle

    data = range(10)
    single = EpochShuffle(data, seed=3)
    shards = [EpochShuffle(data, seed=3, rank=r, world_size=3) for r in range(3)]
    for epoch in (0, 4):
        for sampler in (single, *shards):
            sampler.set_epoch(epoch)
        order = list(single)
        parts = [list(s) for s in shards]
        assert [len(p) for p in parts] == [4, 4, 4]  # equal shares: no process waits for another
        assert sorted(i for p in parts for i in p) == sorted(order + order[:2])  # wrapped order
        assert [p[0] for p in parts] == order[:3]
        draws = [torch.rand(3, generator=s.generator) for s in shards]  # augmentation, after it
        assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    shards[1].set_epoch(4)  # a resumed process: the same share and draws as before
    assert list(shards[1]) == parts[1]
    assert torch.equal(torch.rand(3, generator=shards[1].generator), draws[1])


def test_ddp_trainers_leave_the_training_order_to_the_datamodule(tmp_path: Path) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from neurocuda.training.compose import compose_train_config

    for trainer in ("ddp", "ddp_cpu"):
        cfg = compose_train_config([f"trainer={trainer}"], tmp_path)
        assert cfg.trainer.use_distributed_sampler is False, trainer
        GlobalHydra.instance().clear()
