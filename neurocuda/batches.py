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
