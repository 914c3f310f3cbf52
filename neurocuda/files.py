"""Atomic file output and checked checkpoint input: readers never see a half-written checkpoint,
report, plot or NIR file, and a damaged checkpoint is refused instead of loaded.

A write goes to a temp file ``.<name>.<random>.tmp`` beside the target, is fsynced, renamed onto the
target, and the folder is fsynced, so after a crash or power loss the target is either the old or
the new file. Temp files left by interrupted writes (older than this process) are removed by the
next write to the same folder. A full or read-only disk raises :class:`WriteError` naming the path.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the types: importing a file helper must not load matplotlib or torch
    from matplotlib.figure import Figure

_STARTED = time.time()
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's names, as used here


class WriteError(OSError):
    """A file could not be written (disk full, read-only, no permission); nothing was left."""

    def __init__(self, path: Path, error: OSError) -> None:
        reason = os.strerror(error.errno) if error.errno else str(error)
        super().__init__(error.errno, f"cannot write {path}: {reason[:1].lower()}{reason[1:]}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it onto ``path``.

    On any error the temp file is removed and ``path`` is left as it was; an ``OSError`` (full or
    read-only disk) becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        tmp = None
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as error:
        raise WriteError(path, error) from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def _fsync(path: str | os.PathLike[str], flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as error:  # some file systems cannot fsync a directory
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def sync_to_disk(path: str | os.PathLike[str]) -> None:
    """Flush a file written in place (appended to, not through :func:`atomic_write`) to the disk,
    before something durable (a checkpoint) records what it holds."""
    _fsync(path, os.O_RDONLY)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove temp files of interrupted atomic writes in ``folder`` older than this process."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not _TEMP_NAME.match(entry.name):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < _STARTED:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:  # another process cleaned it up first
                continue
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Write ``data`` atomically with plain Python I/O (ENOSPC surfaces as ``WriteError``)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically.

    Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot, so there is no
    global backend state and nothing to close.
    """
    return atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    )


class DamagedCheckpointError(ValueError):
    """A checkpoint file is cut short or altered (a member fails its CRC-32 check)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} is damaged ({reason}): it was cut short or altered after it was written. "
            "Delete it and resume from an older checkpoint (resume=true picks the newest intact "
            "one) or retrain."
        )
        self.path = path


class NotACheckpointError(ValueError):
    """A file given as a checkpoint is another kind of file (empty, a ``.nir`` graph, a bare
    ``state_dict``): nothing says it is damaged, so the message does not say so either."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(
            f"{path} is not a checkpoint of this project: {what}. Give a .ckpt file that "
            "train.py wrote (checkpoints/*.ckpt of a run)."
        )
        self.path = path


_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` clearly is instead of a ``torch.save`` zip archive (empty, HDF5, text), or
    None (then a fault is damage: e.g. one flipped bit in the zip signature)."""
    with open(path, "rb") as file:
        head = file.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(_HDF5_MAGIC):
        return "it is an HDF5 file (a .nir graph?)"
    if head.startswith(_ZIP_MAGIC) or b"\0" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.reason != "unexpected end of data":  # not a character cut at the 512th byte
            return None
    return "it is a text file"


def verify_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Check every member of a ``torch.save`` file (a zip archive) against its CRC-32.

    ``torch.load`` never checks these checksums, so a flipped byte in a weight would load silently;
    this reads the file once (about 1 GB/s) and raises :class:`DamagedCheckpointError` instead. A
    missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"{path} does not exist", str(path))
    other = _not_a_checkpoint(path)
    if other is not None:
        raise NotACheckpointError(path, other)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, NotImplementedError,
            UnicodeDecodeError, OSError) as error:  # fmt: skip
        raise DamagedCheckpointError(path, f"not a readable checkpoint archive: {error}") from error
    if bad is not None:
        raise DamagedCheckpointError(path, f"member {bad!r} fails its CRC-32 check")
    return path


def read_checkpoint(path: str | os.PathLike[str], **torch_load: Any) -> Any:
    """``torch.load(path, **torch_load)`` after :func:`verify_checkpoint`; ``weights_only``
    defaults to True (plain tensors and containers, no code from the file)."""
    import torch  # here, not at the top: most users of this module never read a checkpoint

    torch_load.setdefault("weights_only", True)
    try:
        return torch.load(verify_checkpoint(path), **torch_load)
    except (RuntimeError, EOFError, KeyError) as error:  # intact zip, unreadable contents
        raise DamagedCheckpointError(Path(path), f"torch.load failed: {error}") from error


def read_lightning_checkpoint(path: str | os.PathLike[str], **torch_load: Any) -> dict[str, Any]:
    """:func:`read_checkpoint` of a file Lightning wrote (a dict with ``state_dict`` and
    ``pytorch-lightning_version``); another ``torch.save`` file (e.g. a bare ``state_dict``)
    raises :class:`NotACheckpointError`."""
    content = read_checkpoint(path, **torch_load)
    lightning_keys = {"state_dict", "pytorch-lightning_version"}
    if not isinstance(content, dict) or not lightning_keys <= content.keys():
        kind = type(content).__name__
        raise NotACheckpointError(
            Path(path),
            f"a torch.save file holding a {kind} without Lightning's state_dict and "
            "version (a bare state_dict?)",
        )
    return content
