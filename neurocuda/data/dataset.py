"""An in-memory CIFAR dataset that augments and normalizes whole batches at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageArrayDataset(Dataset):
    """uint8 HWC images in memory; batches come out normalized float ``[B, 3, H, W]``.

    Written by hand instead of torchvision transforms: on a 2-core machine per-image PIL transforms
    cost as much as training a small net, while one batched gather does pad-crop and flip for the
    whole batch (the DataLoader calls ``__getitems__`` with a batch of indices).
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
    ) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.augment = augment
        self.pad = pad
        self.generator = generator
        """Source of the crop and flip draws; None: torch's global generator (in a DataLoader
        worker, the worker's own, seeded by the loader)."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        x = self.images[index]
        if self.augment:
            x = self._crop_and_flip(x)
        return (x.float() - self.mean) / self.std, self.labels[index]

    def _crop_and_flip(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop after zero padding by ``pad``, and random horizontal flip, per image."""
        b, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (self.pad,) * 4)
        dy = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=self.generator)
        dx = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=self.generator)
        rows = dy + torch.arange(h)
        cols = dx + torch.arange(w)
        flip = torch.rand(b, 1, generator=self.generator) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
        batch = torch.arange(b).view(b, 1, 1, 1)
        chan = torch.arange(c).view(1, c, 1, 1)
        return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


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

