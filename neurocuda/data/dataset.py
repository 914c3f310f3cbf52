"""An in-memory CIFAR dataset that augments and normalizes whole batches at once, on any device."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset


class AugmentDraws(NamedTuple):
    """One batch's random augmentation: crop offsets in ``0..2*pad``, horizontal flips and, with
    cutout, the centre (row, column) of each image's erased square."""

    dy: torch.Tensor  # [B, 1] int64
    dx: torch.Tensor  # [B, 1] int64
    flip: torch.Tensor  # [B, 1] bool
    centre: torch.Tensor | None = None  # [B, 2] int64, cutout only

    def to(self, device: torch.device | str) -> AugmentDraws:
        return AugmentDraws(*(None if d is None else d.to(device) for d in self))


class IndexBatch(NamedTuple):
    """A training batch before its images are assembled: indices into the dataset and the
    augmentation drawn for them. The data module assembles it where it lands (on the GPU)."""

    index: torch.Tensor  # [B] int64
    draws: AugmentDraws | None


def draw_augmentation(
    batch: int, pad: int, generator: torch.Generator | None, cutout: int = 0, size: int = 32
) -> AugmentDraws:
    """Crop offsets, flips and (``cutout`` > 0) cutout centres in ``0..size-1`` for ``batch``
    images, drawn on the CPU from ``generator``; without cutout the draws are those of runs made
    before the option existed."""
    dy = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    centre = torch.randint(0, size, (batch, 2), generator=generator) if cutout else None
    return AugmentDraws(dy, dx, flip, centre)


def crop_and_flip(x: torch.Tensor, draws: AugmentDraws, pad: int) -> torch.Tensor:
    """Crop every image of ``x`` (``[B, C, H, W]``) at its offset after zero padding by ``pad``,
    and flip it horizontally where drawn: one gather for the whole batch, on ``x``'s device."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    rows = draws.dy + torch.arange(h, device=x.device)
    cols = draws.dx + torch.arange(w, device=x.device)
    cols = torch.where(draws.flip, cols.flip(1), cols)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def cut_out(x: torch.Tensor, centre: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of every normalized image of ``x`` (``[B, C, H, W]``)
    around its ``centre`` (``[B, 2]``), clipped at the borders (DeVries & Taylor 2017's cutout:
    zero is the mean colour after normalization)."""
    h, w = x.shape[-2:]
    lo = centre - size // 2  # [B, 2]
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= lo[:, :1]) & (rows < lo[:, :1] + size)  # [B, H]
    in_cols = (cols >= lo[:, 1:]) & (cols < lo[:, 1:] + size)  # [B, W]
    erased = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill(erased, 0.0)


class ImageArrayDataset(Dataset):
    """uint8 HWC images in memory; batches come out normalized float ``[B, 3, H, W]``.

    Written by hand instead of torchvision transforms: on a 2-core machine per-image PIL transforms
    cost as much as training a small net, while one batched gather does pad-crop and flip for the
    whole batch (the DataLoader calls ``__getitems__`` with a batch of indices). With ``deferred``
    it returns :class:`IndexBatch` instead, and :meth:`assemble` on a copy moved to the GPU
    (:meth:`to`) makes the same batch there: the same draws from the same generator, so both
    paths give identical batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        pad: int = 4,
        generator: torch.Generator | None = None,
        cutout: int = 0,
    ) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.augment = augment
        self.pad = pad
        self.cutout = cutout
        """Side of the square erased from every augmented image (0: none)."""
        self.generator = generator
        """Source of the crop and flip draws; None: torch's global generator (in a DataLoader
        worker, the worker's own, seeded by the loader)."""
        self.deferred = False
        """Return :class:`IndexBatch` (images assembled later, on the device) instead of images."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.assemble(torch.as_tensor([index]), self._draws(1))
        return x[0], y[0]

    def __getitems__(
        self, indices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor] | IndexBatch:
        index = torch.as_tensor(indices)
        draws = self._draws(len(index))
        if self.deferred:
            return IndexBatch(index, draws)
        return self.assemble(index, draws)

    def _draws(self, batch: int) -> AugmentDraws | None:
        if not self.augment:
            return None
        size = self.images.shape[-1]
        return draw_augmentation(batch, self.pad, self.generator, self.cutout, size)

    def assemble(
        self, index: torch.Tensor, draws: AugmentDraws | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` cropped and flipped by ``draws`` (if any), normalized, with labels;
        computed where this dataset's tensors are."""
        device = self.images.device
        index = index.to(device)
        x = self.images[index]
        if draws is not None:
            draws = draws.to(device)
            x = crop_and_flip(x, draws, self.pad)
        x = (x.float() - self.mean) / self.std
        if draws is not None and draws.centre is not None:
            x = cut_out(x, draws.centre, self.cutout)
        return x, self.labels[index]

    def to(self, device: torch.device | str) -> ImageArrayDataset:
        """A copy whose images, labels and normalization live on ``device`` (copied once)."""
        moved = copy.copy(self)
        for name in ("images", "labels", "mean", "std"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset already returns a collated batch."""
    return batch


def balanced_subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A seeded order of the samples that interleaves the classes, cut to ``size`` if given.

    The JPEG archive is sorted by class, so every prefix of a split must be balanced: evaluating
    the "first N images" of a class-sorted test set would measure one class only.
    """
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    longest = max(map(len, per_class), default=0)  # 0 for an empty split (data.val_size=0)
    order = [idx[i] for i in range(longest) for idx in per_class if i < len(idx)]
    return np.asarray(order[:size] if size is not None else order, dtype=np.int64)
