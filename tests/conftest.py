"""Shared fixtures: a tiny generated CIFAR-10-layout JPEG archive and Hydra configs built on it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from neurocuda.data import CIFAR10DataModule
from neurocuda.data.sources import CLASSES
from neurocuda.training.compose import compose_train_config
from train import train

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _class_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 image whose colour and stripe direction depend on the class, plus noise."""
    base = np.zeros((32, 32, 3), dtype=np.float32)
    base[..., label % 3] = 180
    stripes = (np.arange(32) // (2 + label // 3)) % 2 * 70
    base += stripes[:, None, None] if label % 2 else stripes[None, :, None]
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def make_tiny_archive(path: Path, train_per_class: int = 24, test_per_class: int = 8) -> Path:
    """Write a ``cifar10-jpeg/{train,test}/<class>/NNNN.jpg`` tar.gz with learnable classes."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for label, cls in enumerate(CLASSES):
                for i in range(count):
                    buf = io.BytesIO()
                    Image.fromarray(_class_image(label, rng)).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a generated tiny archive (240 train, 80 test images)."""
    return make_tiny_archive(tmp_path_factory.mktemp("tiny") / "cifar10-jpeg.tar.gz")


@pytest.fixture
def tiny_datamodule(tiny_archive: Path, tmp_path: Path) -> CIFAR10DataModule:
    """A set-up datamodule on the tiny archive (40 validation images, batch size 32)."""
    dm = CIFAR10DataModule(
        source="jpeg",
        archive=str(tiny_archive),
        cache_dir=str(tmp_path / "cache"),
        val_size=40,
        batch_size=32,
    )
    dm.setup()
    return dm


def tiny_run_overrides(archive: Path, tmp_path: Path) -> list[str]:
    """Overrides that make any experiment run in seconds on the tiny archive."""
    return [
        "data.source=jpeg",
        f"data.archive={archive}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.val_size=40",
        "data.batch_size=32",
        "+model.arch_kwargs.widths=[8,16,16,32]",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.enable_model_summary=false",
        "logger=csv",
        "~callbacks.progress_bar",
    ]


@pytest.fixture
def train_cfg(tiny_archive: Path, tmp_path: Path) -> Iterator[callable]:
    """``train_cfg(*extra_overrides)`` -> a composed config writing under ``tmp_path/run``."""

    def build(*extra: str) -> DictConfig:
        return compose_train_config(
            [*tiny_run_overrides(tiny_archive, tmp_path), *extra], tmp_path / "run"
        )

    yield build
    GlobalHydra.instance().clear()


@pytest.fixture
def relu_checkpoint(train_cfg, tmp_path: Path) -> Path:
    """A trained tiny ReLU CifarNet's checkpoint, ``tmp_path/relu.ckpt``; its run directory
    removed, so a test's own run starts afresh there."""
    train(train_cfg("~conversion", "test=false"))
    relu = tmp_path / "relu.ckpt"
    next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")).rename(relu)
    shutil.rmtree(tmp_path / "run")
    return relu


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 200 KB tmpfs (a disk that fills up); ``remount_read_only(path)`` turns it read-only.

    Mounting needs root; elsewhere the tests using it are skipped with the reason.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
