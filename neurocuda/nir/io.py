"""Read and write NIR files (nir 1.0.8's HDF5 format) atomically and with clear errors."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import nir

from neurocuda.files import atomic_write


def save(graph: nir.NIRGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: nir.write(tmp, graph))


def _fields(kind: type) -> tuple[set[str], set[str]]:
    """(required, allowed) field names of a node type as stored in a file."""
    if kind is nir.NIRGraph:
        return {"nodes", "edges"}, {"nodes", "edges", "metadata", "type"}
    if kind in (nir.Input, nir.Output):
        return {"shape"}, {"shape", "metadata", "type"}
    required, allowed = set(), {"type", "metadata"}
    for field in dataclasses.fields(kind):
        if not field.init or field.name == "metadata":
            continue
        allowed.add(field.name)
        no_default = field.default is dataclasses.MISSING
        if no_default and field.default_factory is dataclasses.MISSING:
            required.add(field.name)
    required -= {"input_type", "input_shape"}  # optional in files (inferred from the graph)
    return required, allowed


def _check_node(group: h5py.Group, where: str) -> None:
    """Raise a ValueError naming the node when its type or fields are wrong."""
    if "type" not in group:
        raise ValueError(f"Node {where} has no 'type' field.")
    kind_name = group["type"][()]
    kind_name = kind_name.decode() if isinstance(kind_name, bytes) else str(kind_name)
    kind = getattr(nir, kind_name, None)
    if not (isinstance(kind, type) and issubclass(kind, nir.NIRNode)) or kind_name == "NIRNode":
        raise ValueError(f"Node {where} has unknown type {kind_name!r} (not a nir 1.0.8 node).")
    required, allowed = _fields(kind)
    present = set(group.keys())
    if missing := required - present:
        raise ValueError(f"Node {where} ({kind_name}) lacks field(s) {sorted(missing)}.")
    if unknown := present - allowed:
        raise ValueError(
            f"Node {where} ({kind_name}) has unknown field(s) {sorted(unknown)}; "
            f"{kind_name} takes {sorted(allowed - {'type'})}."
        )
    if kind is nir.NIRGraph:
        for name, child in group["nodes"].items():
            _check_node(child, f"{where}.{name}" if where != "'<root>'" else repr(name))


def load(path: str | os.PathLike[str]) -> nir.NIRGraph:
    """Read a NIR graph; raise ``FileNotFoundError``/``ValueError`` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIR file {path} does not exist.")
    try:
        with h5py.File(path, "r") as file:
            if "node" not in file:
                raise ValueError(f"{path} is an HDF5 file without a 'node' group: not a NIR file.")
            _check_node(file["node"], "'<root>'")
    except OSError as error:
        raise ValueError(
            f"{path} is not a readable NIR/HDF5 file ({error}); it may be truncated or from an "
            "interrupted copy. Re-export it (scripts/convert.py or neurocuda.nir.save)."
        ) from error
    try:
        return nir.read(path)
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"{path} holds an invalid NIR graph: {error}") from error
