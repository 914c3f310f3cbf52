"""Read and write NIR files (nir 1.0.8's HDF5 format) atomically and with clear errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import nir

from neurocuda.files import atomic_write_bytes
from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.reader import LoadLimits, Reader


def save(graph: nir.NIRGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` atomically; a full or read-only disk raises ``WriteError``.

    The HDF5 image is built in memory and written with plain Python I/O: libhdf5 writing to a full
    disk itself crashes the process (SIGSEGV), while Python reports ENOSPC as an ``OSError``.
    """
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return atomic_write_bytes(path, buffer.getvalue())


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
            return reader.read(file)
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
