"""Read and write NIR files (nir 1.0.8's HDF5 format) atomically and with clear errors."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import h5py
import nir
import numpy as np

from neurocuda.files import atomic_write_bytes
from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.reader import LoadLimits, Reader

IF_FORMAT_KEY = "if_format"
LEGACY_IF_FORMAT = "pre-1.0.6"
"""Graph metadata ``if_format = pre-1.0.6``: the file is written as nir 1.0.4 reads it (sinabs
pins that release, which refuses fields it does not know): ``IF`` nodes without ``v_reset`` (they
reset by subtraction in nir < 1.0.6; nir >= 1.0.6 reads them with ``v_reset = 0``), and nodes
other than graphs without their ``metadata`` (our per-layer labels)."""


def save(graph: nir.NIRGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` atomically; a full or read-only disk raises ``WriteError``.

    The HDF5 image is built in memory and written with plain Python I/O: libhdf5 writing to a full
    disk itself crashes the process (SIGSEGV), while Python reports ENOSPC as an ``OSError``.
    """
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    with h5py.File(buffer, "r+") as file:
        if graph.metadata.get(IF_FORMAT_KEY) == LEGACY_IF_FORMAT:
            _to_legacy_format(file["node"])
        file.attrs[CHECKSUM_KEY] = _checksum(file["node"])
    return atomic_write_bytes(path, buffer.getvalue())


CHECKSUM_KEY = "neurocuda_sha256"
"""Root attribute of the files :func:`save` writes: the SHA-256 of every name and value under
``node``. HDF5 checks none of its data, so a flipped bit can load as another weight; :func:`load`
recomputes it. Readers other than ours (``nir.read``) ignore the attribute; files without it (from
other tools) load unchecked."""


def _checksum(group: h5py.Group) -> str:
    """SHA-256 over every dataset under ``group``: its path, dtype, shape and values."""
    digest = hashlib.sha256()
    names: list[str] = []
    group.visit(names.append)
    for name in sorted(names):
        item = group[name]
        digest.update(name.encode() + b"\0")
        if not isinstance(item, h5py.Dataset):
            continue
        value = item[()]
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, np.ndarray) and value.dtype.kind == "O":  # variable-length strings
            data = repr(value.tolist()).encode()
        else:
            value = np.asarray(value)
            data = f"{value.dtype.str}{value.shape}".encode() + value.tobytes()
        digest.update(data)
    return digest.hexdigest()


def _to_legacy_format(group: h5py.Group) -> None:
    """Rewrite node ``group`` and the nodes under it as nir 1.0.4 reads them (``IF_FORMAT_KEY``)."""
    kind = group["type"][()] if "type" in group else None
    if kind == b"IF" and "v_reset" in group:
        del group["v_reset"]
    if kind != b"NIRGraph" and "metadata" in group:
        del group["metadata"]
    for item in group.get("nodes", {}).values():
        _to_legacy_format(item)


def load(
    path: str | os.PathLike[str], limits: LoadLimits | None = None, strict: bool = True
) -> nir.NIRGraph:
    """Read a NIR graph; ``FileNotFoundError`` or :class:`NIRFormatError` say what is wrong.

    Sizes, counts and nesting depth are checked against ``limits`` (default :class:`LoadLimits`)
    before any data is read. ``strict=False`` loads a file whose declared node types disagree with
    nir's type inference (other tools write such files; they run) with a warning naming the nodes
    and both shapes, instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIR file {path} does not exist.")
    reader = Reader(path, limits or LoadLimits(), strict)
    try:
        with h5py.File(path, "r") as file:
            graph = reader.read(file)
            saved = file.attrs.get(CHECKSUM_KEY)
            if saved is not None and _text(saved) != _checksum(file["node"]):
                raise NIRFormatError(
                    f"{path} is damaged: its values differ from those it was saved with (SHA-256 "
                    "mismatch; a flipped bit, a bad copy). Re-export it (scripts/convert.py or "
                    "neurocuda.nir.save) or copy it again; edited on purpose: delete its root "
                    f"attribute {CHECKSUM_KEY}."
                )
            return graph
    except NIRFormatError:
        raise
    except OSError as error:
        raise NIRFormatError(
            f"{path} is not a readable NIR/HDF5 file ({reader.location}: {error}); it may be "
            "truncated or from an interrupted copy. Re-export it (scripts/convert.py or "
            "neurocuda.nir.save)."
        ) from error
    except Exception as error:  # h5py/numpy/nir on corrupt bytes: name where it happened
        raise NIRFormatError(
            f"{path}: {reader.location}: unreadable ({type(error).__name__}: {error})."
        ) from error


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
