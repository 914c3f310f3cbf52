"""The errors users see when CIFAR-10 cannot be found or is damaged."""

from __future__ import annotations

HOW_TO_PROVIDE = """Provide CIFAR-10 in one of these ways:
  1. data.source=torchvision data.download=true   (downloads into data.root; needs a network)
  2. data.source=torchvision data.root=DIR        (DIR holds an extracted cifar-10-batches-py/)
  3. data.source=jpeg data.archive=PATH           (a cifar10-jpeg.tar.gz archive or its
                                                   extracted folder, layout
                                                   cifar10-jpeg/{train,test}/<class>/*.jpg)
  data.source=auto (the default) tries 3, then 2, then 1."""


class DatasetNotFoundError(FileNotFoundError):
    """CIFAR-10 is neither on disk nor downloadable; the message says how to provide it."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"CIFAR-10 not available: {problem}\n{HOW_TO_PROVIDE}")


class CorruptDatasetError(ValueError):
    """A CIFAR-10 archive or folder cannot be read (truncated download, damaged file)."""

    def __init__(self, path: object, error: BaseException) -> None:
        super().__init__(
            f"CIFAR-10 archive {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "copy or download it again (or point data.archive at a good copy)."
        )
