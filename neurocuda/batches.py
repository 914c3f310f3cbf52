"""Helpers on iterables of batches (data loaders, lists of ``(x, y)``), free of any data source."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch


def first_images(batches: Iterable, count: int | None = None) -> Iterator[torch.Tensor]:
    """The image tensors of the first ``count`` batches (all when ``None``), which are ``(x, y)``
    or ``x``."""
    for batch in itertools.islice(batches, count):
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_images(batch: object) -> int:
    """Images in one batch: ``(x, y)``, ``[x, y]`` or ``x`` (an index batch counts its indices)."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else 0


def image_count(batches: Iterable, max_images: int | None = None) -> int | None:
    """Images a pass over ``batches`` (capped at ``max_images``) will see, when the loader's
    dataset has a length or the cap is set; else None."""
    dataset = getattr(batches, "dataset", None)
    total = len(dataset) if hasattr(dataset, "__len__") else None
    if max_images is not None:
        return max_images if total is None else min(total, max_images)
    return total


def capped(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], max_images: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(x, y)`` batches, the last one cut so that at most ``max_images`` images come out
    (all when ``None``)."""
    seen = 0
    for x, y in batches:
        if max_images is not None:
            if seen >= max_images:
                return
            x, y = x[: max_images - seen], y[: max_images - seen]
        seen += len(y)
        yield x, y
