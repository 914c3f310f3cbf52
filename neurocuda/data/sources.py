"""Load CIFAR-10 as uint8 arrays from a JPEG ImageFolder archive/folder or torchvision's batches."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from neurocuda.data.errors import CorruptDatasetError, DatasetNotFoundError
from neurocuda.files import WriteError, atomic_write
from neurocuda.progress import progress

log = logging.getLogger(__name__)

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``[N, 32, 32, 3]`` (HWC) and labels as int64 ``[N]``."""

    images: np.ndarray
    labels: np.ndarray


def _member_split_and_label(name: str) -> tuple[str, int] | None:
    """Map ``.../{train,test}/<class>/<file>.jpg`` to (split, label); None for other members."""
    parts = Path(name).parts
    if len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
        return None
    split, cls = parts[-3], parts[-2]
    if split not in ("train", "test") or cls not in CLASSES:
        return None
    return split, CLASSES.index(cls)


def _iter_archive(path: Path) -> Iterator[tuple[str, bytes, int]]:
    """Each file's name and bytes, with the kB of the (compressed) archive read so far: the
    progress measure, since a gzip stream's image count is only known once it is read."""
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:
            if member.isfile() and (handle := tar.extractfile(member)) is not None:
                yield member.name, handle.read(), raw.tell() // 1024
        while tar.fileobj.read(1 << 20):  # read to the end: gzip/bz2/xz then check their CRC
            pass


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted."""
    return sorted(f for f in folder.rglob("*") if f.is_file())


def _iter_folder(path: Path, files: list[Path]) -> Iterator[tuple[str, bytes, int]]:
    """Each file's name and bytes, with the number of files read so far."""
    for done, file in enumerate(files, 1):
        yield str(file.relative_to(path)), file.read_bytes(), done


# What a damaged archive raises: tarfile/gzip (ReadError, BadGzipFile, EOFError, zlib.error) and
# PIL on a damaged JPEG (UnidentifiedImageError and "image file is truncated" are OSErrors).
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _decode(path: Path) -> dict[str, Split]:
    """Decode every image; a damaged archive raises one :class:`CorruptDatasetError`."""
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    if path.is_file():
        members, total, unit = _iter_archive(path), -(-path.stat().st_size // 1024), "kB"
    else:
        files = _files(path)
        members, total, unit = _iter_folder(path, files), len(files), "files"
    with progress(f"Decoding {path.name} (once; cached afterwards)", total, unit) as advance:
        read = 0
        try:
            for name, payload, done in members:
                advance(done - read)
                read = done
                key = _member_split_and_label(name)
                if key is None:
                    continue
                image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"), np.uint8)
                if image.shape != (32, 32, 3):
                    raise ValueError(f"{path}:{name} is {image.shape}, expected 32x32 RGB.")
                images[key[0]].append(image)
                labels[key[0]].append(key[1])
            advance(total - read)  # an archive's tail: tar padding, the gzip trailer
        except ARCHIVE_ERRORS as error:
            raise CorruptDatasetError(path, error) from error
    if not images["train"] or not images["test"]:
        raise DatasetNotFoundError(
            f"{path} holds no images in the layout cifar10-jpeg/{{train,test}}/<class>/*.jpg "
            f"(found {len(images['train'])} train, {len(images['test'])} test)."
        )
    for split, found in labels.items():
        present = set(found)
        missing = [c for i, c in enumerate(CLASSES) if i not in present]
        if missing:  # e.g. a folder partly extracted or copied
            problem = f"no {split} images of {', '.join(missing)}: incomplete"
            raise CorruptDatasetError(path, ValueError(problem))
    return {
        split: Split(np.stack(images[split]), np.asarray(labels[split], dtype=np.int64))
        for split in images
    }


def _cache_key(path: Path) -> str:
    """The archive's path, size and modification time; for a folder, those of every file in it
    (a folder's own times do not change when a file inside is rewritten)."""
    files = [path] if path.is_file() else _files(path)
    digest = hashlib.sha1(str(path.resolve()).encode())
    for file in files:
        stat = file.stat()
        digest.update(f"|{file.relative_to(path) if file != path else ''}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}".encode())  # fmt: skip
    return digest.hexdigest()[:16]


def load_jpeg(path: str | Path, cache_dir: str | Path) -> dict[str, Split]:
    """Decode a JPEG archive (``.tar.gz``) or folder once; later calls read the ``.npz`` cache."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"no JPEG archive or folder at {path}.")
    cache = Path(cache_dir).expanduser() / f"cifar10-jpeg-{_cache_key(path)}.npz"
    if cache.exists() and (splits := _read_cache(cache)) is not None:
        return splits
    splits = _decode(path)
    arrays = {
        f"{s}_{k}": getattr(v, a)
        for s, v in splits.items()
        for k, a in (("x", "images"), ("y", "labels"))
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a name
            np.savez(handle, **arrays)

    try:
        atomic_write(cache, write)
    except WriteError as error:  # the images are decoded: run on, decode again next time
        log.warning("%s; continuing without the cache.", error)
    else:
        log.info("Cached decoded CIFAR-10 at %s", cache)
    return splits


def _read_cache(cache: Path) -> dict[str, Split] | None:
    """The cached splits, or ``None`` (with a warning, the file removed) when it is damaged."""
    try:
        with np.load(cache) as z:
            splits = {s: Split(z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "test")}
        for name, split in splits.items():
            images, labels = split.images, split.labels
            if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
                raise ValueError(f"{name} images are {images.dtype} {images.shape}")
            if labels.shape != images.shape[:1] or not np.isin(labels, range(10)).all():
                raise ValueError(f"{name} labels do not match the images")
    except Exception as error:  # numpy raises anything from BadZipFile to SyntaxError on damage
        log.warning("Cache %s is damaged (%s: %s); rebuilding it.", cache, type(error).__name__,
                    error)  # fmt: skip
        cache.unlink(missing_ok=True)
        return None
    return splits


def load_torchvision(root: str | Path, download: bool) -> dict[str, Split]:
    """Read torchvision's official CIFAR-10 (``cifar-10-batches-py``), downloading if asked."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    splits = {}
    for split in ("train", "test"):
        try:
            ds = CIFAR10(str(root), train=split == "train", download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DatasetNotFoundError(f"no cifar-10-batches-py under {root} ({err}).") from err
        except OSError as err:  # URLError and socket errors when there is no network
            raise DatasetNotFoundError(f"download into {root} failed ({err}).") from err
        splits[split] = Split(np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64))
    return splits


def load_cifar10(
    source: str, root: str | Path, archive: str | Path | None, download: bool, cache_dir: str | Path
) -> dict[str, Split]:
    """Load CIFAR-10 from ``source`` = ``jpeg``, ``torchvision`` or ``auto`` (jpeg, then
    batches)."""
    if source == "jpeg":
        if archive is None:
            raise DatasetNotFoundError("data.source=jpeg needs data.archive.")
        return load_jpeg(archive, cache_dir)
    if source == "torchvision":
        return load_torchvision(root, download)
    if source == "auto":
        if archive is not None and Path(archive).expanduser().exists():
            return load_jpeg(archive, cache_dir)
        if (Path(root).expanduser() / "cifar-10-batches-py").exists() or download:
            return load_torchvision(root, download)
        raise DatasetNotFoundError(
            f"no JPEG archive at {archive} and no cifar-10-batches-py under {root}."
        )
    raise ValueError(f"Unknown data.source={source!r}; use auto, jpeg or torchvision.")
