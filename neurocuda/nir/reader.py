"""Read a NIR file (nir 1.0.8 HDF5) defensively; every problem is a :class:`NIRFormatError`.

Two iterative passes (no recursion on the file's nesting, so deep files cannot overflow the stack):

1. **Scan** (no data read): node types, field names, dataset shapes and dtypes, chunk and
   node/edge counts, nesting depth and string lengths against :class:`LoadLimits`; data stored in
   other files (external links and storage, virtual datasets) is refused. Sizes come from the
   HDF5 headers (strings' from their stored descriptors), so a small file declaring a huge tensor
   or string, or a gzip bomb, is refused before anything is allocated or decompressed.
2. **Build**: read each dataset, check its values (finite parameters, positive time constants,
   sane shapes and strides), then construct the nodes bottom-up with nir's own constructors and
   type inference (as ``nir.read`` does) and refuse dangling edges and names that collide once
   nested graphs are inlined.

Anything else that goes wrong while reading (h5py, numpy or nir exceptions on corrupt bytes) is
turned into a ``NIRFormatError`` naming the node and field being read at the time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np

from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.schedule import check_flat_names

ROOT = ""  # the top-level graph, shown as <root>


@dataclass(frozen=True)
class LoadLimits:
    """Upper bounds checked before any data is read (generous: models here are far below)."""

    max_tensor_elements: int = 2**28
    """Elements of any one dataset, and of any declared shape (an Input's, a conv's)."""
    max_total_bytes: int = 2**32
    """Bytes of all datasets together, as declared by their shapes and dtypes (4 GiB)."""
    max_decompressed_bytes: int = 2**30
    """Bytes of the compressed datasets once decompressed (1 GiB): the gzip-bomb bound."""
    max_nodes: int = 10_000
    """Nodes in the file, nested graphs' members included."""
    max_edges: int = 2_048
    """Edges of one graph level; nir's type inference takes time quadratic in it (~1 s here)."""
    max_depth: int = 32
    """Nesting depth of graphs (and metadata groups)."""
    max_chunks: int = 2**16
    """Chunks of all datasets together, as their shapes and chunk shapes declare (libhdf5 takes
    ~5 s for 10**6 chunks, written or not; h5py's chunks are 8 KiB-1 MiB)."""
    max_string_bytes: int = 2**20
    """Bytes of one variable-length element (a name, a type, a metadata string), read from its
    stored length before libhdf5 allocates it."""


VLEN_BLOCK = 2**16  # variable-length descriptors read at a time


# How each stored field is checked; any other field is a parameter ("float").
FIELD_KINDS: dict[str, str] = {
    "tau": "positive",
    "tau_mem": "positive",
    "tau_syn": "positive",
    "shape": "shape",
    "input_type": "shape",
    "input_shape": "shape",
    "kernel_size": "shape",
    "stride": "shape",
    "dilation": "shape",
    "padding": "padding",
    "groups": "count",
    "start_dim": "index",
    "end_dim": "index",
}
MAX_INDEX = 32  # HDF5 and torch tensors have at most 32 dimensions


@dataclass
class _Spec:
    """One node as found by the scan: where it is, its type, datasets and children."""

    where: str  # dotted path of graph names, as the executor names flattened members
    kind: type
    group: h5py.Group
    fields: dict[str, h5py.Dataset] = field(default_factory=dict)
    children: dict[str, _Spec] = field(default_factory=dict)
    edges: h5py.Dataset | None = None


def _fields(kind: type) -> tuple[set[str], set[str]]:
    """(required, allowed) field names of a node type as stored in a file."""
    if kind is nir.NIRGraph:
        return {"nodes", "edges"}, {"nodes", "edges", "metadata", "type"}
    if kind in (nir.Input, nir.Output):
        return {"shape"}, {"shape", "metadata", "type"}
    required, allowed = set(), {"type", "metadata"}
    for item in dataclasses.fields(kind):
        if not item.init or item.name == "metadata":
            continue
        allowed.add(item.name)
        no_default = item.default is dataclasses.MISSING
        if no_default and item.default_factory is dataclasses.MISSING:
            required.add(item.name)
    required -= {"input_type", "input_shape"}  # optional in files (inferred from the graph)
    return required, allowed


def _node(where: str, kind: str | None = None) -> str:
    name = repr(where) if where != ROOT else "<root>"
    return f"node {name}" if kind is None else f"node {name} ({kind})"


def _node_types() -> dict[str, type]:
    return {
        name: kind
        for name in nir.ir.__all__
        if isinstance(kind := getattr(nir, name), type) and issubclass(kind, nir.NIRNode)
    }


NODE_TYPES = _node_types()


def _nested_variable(dtype: np.dtype) -> bool:
    """Whether variable-length data sits inside another type (a compound, an array, a
    variable-length sequence of them)."""
    if h5py.check_string_dtype(dtype) is not None or h5py.check_ref_dtype(dtype) is not None:
        return False
    base = h5py.check_vlen_dtype(dtype)
    return (dtype if base is None else base).hasobject


def _variable_item_bytes(dtype: np.dtype) -> int | None:
    """Bytes per unit of a variable-length string or sequence dtype (None: fixed size)."""
    if (string := h5py.check_string_dtype(dtype)) is not None:
        return 1 if string.length is None else None
    base = h5py.check_vlen_dtype(dtype)
    return None if base is None else base.itemsize


class Reader:
    """Scan and build one file; ``location`` names what is being read (for error messages)."""

    def __init__(self, path: Path, limits: LoadLimits, strict: bool = True) -> None:
        self.path = path
        self.limits = limits
        self.strict = strict
        self.node = "the file"
        self.field: str | None = None
        self.nodes = 0
        self.bytes = 0
        self.decompressed = 0
        self.chunks = 0

    @property
    def location(self) -> str:
        return self.node if self.field is None else f"{self.node}, field {self.field!r}"

    def at(self, node: str, field_name: str | None = None) -> None:
        self.node, self.field = node, field_name

    def fail(self, problem: str) -> NIRFormatError:
        return NIRFormatError(f"{self.path}: {self.location} {problem}")

    def read(self, file: h5py.File) -> nir.NIRGraph:
        if "node" not in file or not isinstance(self.member(file, "node"), h5py.Group):
            raise NIRFormatError(
                f"{self.path} is an HDF5 file without a 'node' group: not a NIR file."
            )
        root = self.scan(file["node"])
        if root.kind is not nir.NIRGraph:
            raise NIRFormatError(
                f"{self.path}: the top-level node is a {root.kind.__name__}, not a NIRGraph."
            )
        graph = self.build(root)
        try:
            check_flat_names(graph)
        except NIRFormatError as error:
            raise NIRFormatError(f"{self.path}: {error}") from None
        return graph

    # -- pass 1: headers only -------------------------------------------------------------------

    def scan(self, top: h5py.Group) -> _Spec:
        root: _Spec | None = None
        stack: list[tuple[h5py.Group, str, int, _Spec | None, str]] = [(top, ROOT, 0, None, "")]
        while stack:
            group, where, depth, parent, name = stack.pop()
            self.at(_node(where))
            if depth > self.limits.max_depth:
                raise self.fail(
                    f"is nested more than {self.limits.max_depth} graphs deep "
                    "(LoadLimits.max_depth)."
                )
            spec = self.scan_node(group, where)
            if parent is None:
                root = spec
            else:
                parent.children[name] = spec
            if spec.kind is nir.NIRGraph:
                members = self.member(group, "nodes")
                if not isinstance(members, h5py.Group):
                    raise self.fail("has a 'nodes' field that is not a group.")
                self.count_nodes(len(members))
                children = []
                for child in members:
                    child_name = self.name(child, "node name")
                    child_where = child_name if where == ROOT else f"{where}.{child_name}"
                    item = self.member(members, child)
                    if not isinstance(item, h5py.Group):
                        raise self.fail(f"has a member {child_name!r} that is not a group.")
                    children.append((item, child_where, depth + 1, spec, child_name))
                stack.extend(
                    reversed(children)
                )  # popped in file order: nodes keep nir.read's order
        assert root is not None
        return root

    def member(self, group: h5py.Group, key: str) -> h5py.HLObject:
        """``group[key]``, refusing a link into another file (loading would read that file)."""
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise self.fail(
                f"links {key!r} to {link.path!r} in {link.filename!r}, another file; a NIR file "
                "holds its own data: re-export it."
            )
        return group[key]

    def name(self, key: str | bytes, what: str) -> str:
        if not isinstance(key, str):
            raise self.fail(f"has a {what} {key!r} that is not valid UTF-8.")
        return key

    def count_nodes(self, count: int) -> None:
        self.nodes += count
        if self.nodes > self.limits.max_nodes:
            raise self.fail(
                f"brings the file over {self.limits.max_nodes} nodes (LoadLimits.max_nodes)."
            )

    def scan_node(self, group: h5py.Group, where: str) -> _Spec:
        keys = {self.name(key, "field name") for key in group}
        if "type" not in keys:
            raise self.fail("has no 'type' field.")
        self.field = "type"
        kind_name = self.string(self.member(group, "type"))
        self.field = None
        kind = NODE_TYPES.get(kind_name)
        if kind is None or kind is nir.NIRNode:
            raise self.fail(f"has unknown type {kind_name!r} (not a nir 1.0.8 node).")
        self.at(_node(where, kind_name))
        required, allowed = _fields(kind)
        if missing := required - keys:
            raise self.fail(f"lacks field(s) {sorted(missing)}.")
        if unknown := keys - allowed:
            raise self.fail(
                f"has unknown field(s) {sorted(unknown)}; "
                f"{kind_name} takes {sorted(allowed - {'type'})}."
            )
        spec = _Spec(where, kind, group)
        for key in sorted(keys - {"type", "metadata", "nodes"}):
            self.field = key
            dataset = self.member(group, key)
            if not isinstance(dataset, h5py.Dataset):
                raise self.fail("is a group, not a dataset.")
            self.size(dataset)
            if key == "edges":
                spec.edges = self.check_edges(dataset)
            else:
                self.check_dtype(dataset, key)
                spec.fields[key] = dataset
        if "metadata" in keys:
            self.field = "metadata"
            self.scan_metadata(self.member(group, "metadata"))
        self.field = None
        return spec

    def size(self, dataset: h5py.Dataset) -> None:
        """Account for a dataset's declared size; refuse it when over a limit."""
        limits = self.limits
        if dataset.shape is None:
            raise self.fail("has no dataspace (an empty HDF5 dataset).")
        elements = math.prod(dataset.shape)
        if elements > limits.max_tensor_elements:
            raise self.fail(
                f"declares shape {dataset.shape} ({elements:,} "
                f"elements; LoadLimits.max_tensor_elements is "
                f"{limits.max_tensor_elements:,})."
            )
        plist = dataset.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL or plist.get_external_count():
            raise self.fail(
                "stores its data in other files (an HDF5 external or virtual dataset), which "
                "loading would read; a NIR file holds its own data: re-export it."
            )
        grid = 0  # chunks as declared; libhdf5 visits each, written or not (superlinear)
        if dataset.chunks is not None:
            grid = math.prod(-(-n // c) for n, c in zip(dataset.shape, dataset.chunks, strict=True))
            self.chunks += grid
            if self.chunks > limits.max_chunks:
                raise self.fail(
                    f"stores {elements:,} elements in chunks of {dataset.chunks}, which brings "
                    f"the file over {limits.max_chunks:,} chunks (LoadLimits.max_chunks)."
                )
        nbytes = elements * dataset.dtype.itemsize
        self.account(nbytes)
        if _nested_variable(dataset.dtype):
            raise self.fail(
                f"has dtype {dataset.dtype}, a type with variable-length members (whose lengths "
                "cannot be checked first); NIR fields and metadata hold strings, numbers and "
                "arrays of them."
            )
        if (item := _variable_item_bytes(dataset.dtype)) is not None:
            self.account(self.variable_bytes(dataset, plist, item))
        if plist.get_nfilters() > 0:  # compressed (or other filters)
            # libhdf5 decompresses whole chunks: a (10,) tensor in a (2**27,) chunk is 512 MiB
            self.decompressed += grid * math.prod(dataset.chunks) * dataset.dtype.itemsize
            if self.decompressed > limits.max_decompressed_bytes:
                raise self.fail(
                    f"brings the compressed datasets over "
                    f"{limits.max_decompressed_bytes:,} bytes once decompressed "
                    "(LoadLimits.max_decompressed_bytes)."
                )

    def account(self, nbytes: int) -> None:
        self.bytes += nbytes
        if self.bytes > self.limits.max_total_bytes:
            raise self.fail(
                f"brings the datasets over {self.limits.max_total_bytes:,} bytes "
                "(LoadLimits.max_total_bytes)."
            )

    def variable_bytes(self, dataset: h5py.Dataset, plist: h5py.h5p.PropDCID, item: int) -> int:
        """Bytes the variable-length elements of ``dataset`` declare (``item`` bytes per unit),
        read from their stored descriptors (length, heap address, index); one over
        ``LoadLimits.max_string_bytes`` is refused.

        By hand because libhdf5 allocates whatever a descriptor declares before it finds the data
        shorter (one flipped byte in a file: a 2 GB allocation, seconds of page faults, or the
        OOM killer) and h5py exposes no H5Dvlen_get_buf_size to ask first."""
        address_bytes = dataset.file.id.get_create_plist().get_sizes()[0]
        descriptor = np.dtype([("length", "<u4"), ("heap", f"V{address_bytes + 4}")])
        layout = plist.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:  # what libhdf5 reads: one descriptor per element
            offset = dataset.id.get_offset()  # None: never written, the elements are empty
            size = math.prod(dataset.shape) * descriptor.itemsize
            spans = [] if offset is None else [(offset, size)]
        elif layout == h5py.h5d.CHUNKED and plist.get_nfilters() == 0:
            chunks = (dataset.id.get_chunk_info(i) for i in range(dataset.id.get_num_chunks()))
            spans = [(chunk.byte_offset, chunk.size) for chunk in chunks]
        else:
            raise self.fail(
                "stores variable-length data compressed or in its header, where their lengths "
                "cannot be checked before libhdf5 allocates them; write strings uncompressed "
                "(as nir.write and neurocuda.nir.save do)."
            )
        handle = dataset.file.id.get_vfd_handle()
        block = VLEN_BLOCK * descriptor.itemsize
        total = 0
        for start, size in spans:
            if size % descriptor.itemsize:
                raise self.fail(f"stores {size} bytes, not whole {descriptor.itemsize}-byte items.")
            for at in range(start, start + size, block):
                count = min(block, start + size - at)
                raw = os.pread(handle, count, at)
                if len(raw) != count:
                    raise self.fail("stores its data past the end of the file (truncated).")
                lengths = np.frombuffer(raw, descriptor)["length"].astype(np.int64) * item
                if lengths.size and (longest := int(lengths.max())) > self.limits.max_string_bytes:
                    raise self.fail(
                        f"declares a variable-length element of {longest:,} bytes "
                        f"(LoadLimits.max_string_bytes is {self.limits.max_string_bytes:,}); "
                        "the file is corrupt."
                    )
                total += int(lengths.sum())
        return total

    def check_dtype(self, dataset: h5py.Dataset, key: str) -> None:
        kind = FIELD_KINDS.get(key, "float")
        dtype = dataset.dtype
        is_string = h5py.check_string_dtype(dtype) is not None
        if kind == "padding" and is_string:
            if dataset.shape != ():
                raise self.fail(f"is a string array of shape {dataset.shape}.")
            return
        allowed = "iu" if kind in ("shape", "padding", "count", "index") else "fiu"
        if is_string or dtype.kind not in allowed:
            wanted = "integers" if allowed == "iu" else "numbers"
            raise self.fail(f"has dtype {dtype}; it must hold {wanted}.")
        if kind in ("count", "index") and dataset.shape != ():
            raise self.fail(f"has shape {dataset.shape}; it must be one integer.")
        if kind in ("shape", "padding") and len(dataset.shape) > 1:
            raise self.fail(f"has shape {dataset.shape}; it must be a vector.")

    def check_edges(self, dataset: h5py.Dataset) -> h5py.Dataset:
        shape = dataset.shape
        if shape == (0,):  # nir writes an empty edge list as an empty float array
            return dataset
        if len(shape) != 2 or shape[1] != 2 or h5py.check_string_dtype(dataset.dtype) is None:
            raise self.fail(
                f"has shape {shape} and dtype {dataset.dtype}; it must "
                "be an [E, 2] array of node names."
            )
        if shape[0] > self.limits.max_edges:
            raise self.fail(
                f"has {shape[0]} edges (LoadLimits.max_edges is {self.limits.max_edges})."
            )
        return dataset

    def scan_metadata(self, top: h5py.HLObject) -> None:
        stack = [(top, 0)]
        while stack:
            item, depth = stack.pop()
            if depth > self.limits.max_depth:
                raise self.fail(f"is nested more than {self.limits.max_depth} groups deep.")
            if isinstance(item, h5py.Dataset):
                self.size(item)
                continue
            self.count_nodes(len(item))  # metadata entries count like nodes (a bound on work)
            for key in item:
                self.name(key, "key")
                stack.append((self.member(item, key), depth + 1))

    def string(self, dataset: h5py.HLObject) -> str:
        if not isinstance(dataset, h5py.Dataset) or dataset.shape != ():
            raise self.fail("is not a single string.")
        if h5py.check_string_dtype(dataset.dtype) is None:
            raise self.fail(f"has dtype {dataset.dtype}, not a string.")
        self.size(dataset)
        return self.decode(dataset[()])

    def decode(self, value: Any) -> str:
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise self.fail(
                    f"holds {value[:40]!r}, which is not valid UTF-8 ({error})."
                ) from None
        if not isinstance(value, str):
            raise self.fail(f"holds {type(value).__name__}, not a string.")
        return value

    # -- pass 2: values and nodes ---------------------------------------------------------------

    def build(self, root: _Spec) -> nir.NIRGraph:
        order: list[_Spec] = []
        stack = [root]
        while stack:  # pre-order; reversed, every node comes after its children
            spec = stack.pop()
            order.append(spec)
            stack.extend(spec.children.values())
        built: dict[int, nir.NIRNode] = {}
        for spec in reversed(order):
            self.at(_node(spec.where, spec.kind.__name__))
            built[id(spec)] = self.build_node(spec, built)
        return built[id(root)]

    def build_node(self, spec: _Spec, built: dict[int, nir.NIRNode]) -> nir.NIRNode:
        values = {key: self.value(dataset, key) for key, dataset in spec.fields.items()}
        metadata = self.metadata(spec.group["metadata"]) if "metadata" in spec.group else None
        extra = {} if metadata is None else {"metadata": metadata}
        if spec.kind is nir.NIRGraph:
            nodes = {name: built[id(child)] for name, child in spec.children.items()}
            edges = self.edge_list(spec.edges, nodes)
            self.field = None
            try:
                return nir.NIRGraph(nodes=nodes, edges=edges, **extra)
            except Exception as error:  # nir's type inference on a malformed graph
                if self.strict or "type" not in str(error) or "mismatch" not in str(error):
                    raise self.fail(
                        f"is an invalid graph ({type(error).__name__}: {error}); a file whose "
                        "declared types disagree with nir's inference loads with "
                        "load(path, strict=False)."
                    ) from error
                warnings.warn(
                    f"{self.path}: {self.location}: declared types disagree with nir's type "
                    f"inference ({error}); loaded anyway (strict=False): the executor runs the "
                    "shapes the data has.",
                    stacklevel=2,
                )
                return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False, **extra)
        self.check_parameters(spec.kind, values)
        try:
            return nir.dict2NIRNode({"type": spec.kind.__name__, **values, **extra})
        except Exception as error:  # nir's constructor on inconsistent fields
            raise self.fail(f"has invalid fields ({type(error).__name__}: {error}).") from error

    def value(self, dataset: h5py.Dataset, key: str) -> Any:
        self.field = key
        value = dataset[()]
        kind = FIELD_KINDS.get(key, "float")
        if isinstance(value, bytes | str):
            value = self.decode(value)
            if value not in ("same", "valid"):
                raise self.fail(f"is {value!r}, neither 'same', 'valid' nor integers.")
            return value
        array = np.asarray(value)
        if kind in ("positive", "float"):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise self.fail(
                    f"holds {bad} NaN or Inf values (of {array.size}); parameters must be finite."
                )
            if kind == "positive" and not (array > 0).all():
                raise self.fail("holds time constants <= 0; they must be positive.")
            return value
        low = {"shape": 1, "padding": 0, "count": 1, "index": -MAX_INDEX}[kind]
        high = MAX_INDEX if kind == "index" else self.limits.max_tensor_elements
        if array.size and (array.min() < low or array.max() > high):
            raise self.fail(f"holds {array.tolist()}, outside [{low}, {high}].")
        if kind == "shape" and math.prod(int(v) for v in array.flat) > high:
            raise self.fail(
                f"declares shape {array.tolist()} of more than {high:,} elements "
                "(LoadLimits.max_tensor_elements)."
            )
        return value

    def check_parameters(self, kind: type, values: dict[str, Any]) -> None:
        """Shape rules nir's constructors leave unchecked (they would fail or broadcast later)."""
        self.field = None
        shapes = {
            key: np.shape(v)
            for key, v in values.items()
            if FIELD_KINDS.get(key) is None or FIELD_KINDS[key] == "positive"
        }
        if kind in (nir.Affine, nir.Linear):
            if len(shapes["weight"]) != 2:
                raise self.fail(f"has a weight of shape {shapes['weight']}; it must be [out, in].")
        elif kind in (nir.Conv1d, nir.Conv2d):
            dims = 3 if kind is nir.Conv1d else 4
            if len(shapes["weight"]) != dims:
                raise self.fail(
                    f"has a weight of shape {shapes['weight']}; a {kind.__name__} "
                    f"weight has {dims} dimensions."
                )
            if shapes["weight"][0] % int(values["groups"]):
                raise self.fail(
                    f"has {shapes['weight'][0]} output channels, not divisible by "
                    f"groups={int(values['groups'])}."
                )
        else:
            if len(set(shapes.values())) > 1:
                raise self.fail(
                    f"has parameters of different shapes {shapes}; NIR gives one value per neuron."
                )
            return
        out = shapes["weight"][0]
        if "bias" in shapes and shapes["bias"] != (out,):
            raise self.fail(f"has a bias of shape {shapes['bias']}; the weight has {out} outputs.")

    def edge_list(self, dataset: h5py.Dataset | None, nodes: dict) -> list[tuple[str, str]]:
        self.field = "edges"
        if dataset is None or dataset.shape == (0,):
            return []
        edges = []
        for src, dst in dataset[()]:
            pair = (self.decode(src), self.decode(dst))
            for end in pair:
                if end not in nodes:
                    raise self.fail(
                        f"has edge {pair} to node {end!r}, which does not exist; "
                        f"nodes are {sorted(nodes)}."
                    )
            edges.append(pair)
        return edges

    def metadata(self, top: h5py.HLObject) -> dict[str, Any]:
        self.field = "metadata"
        if not isinstance(top, h5py.Group):
            raise self.fail("is not a group.")
        result: dict[str, Any] = {}
        stack = [(top, result)]
        while stack:
            group, into = stack.pop()
            for key in group:
                item = group[key]
                if isinstance(item, h5py.Group):
                    into[key] = {}
                    stack.append((item, into[key]))
                else:
                    value = item[()]
                    into[key] = self.decode(value) if isinstance(value, bytes) else value
        return result
