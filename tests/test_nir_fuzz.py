"""Fuzzing ``neurocuda.nir.load``: seeded mutations of a small exported file (issue 13).

Every mutant is loaded, and run when it loads, in a worker process with a time limit, so a hang or
a crash inside libhdf5 is counted instead of stopping the test. Each mutation has an expectation:

- ``reject``: must raise NIRFormatError (at load, or when the executor checks the graph);
- ``same``: must load and give exactly the original output (renames, wider dtypes, metadata,
  uncompressed data, a few levels of nesting);
- ``param``: one finite parameter changed: must give exactly the output of the original graph
  with that value changed in memory;
- ``any`` (byte flips, truncation, zeroed blocks): NIRFormatError, or a graph with the original's
  structure (nodes, types, edges, non-parameter fields) whose parameters are as the bytes say.

Anything else is a crash (another exception, or the worker died), a hang (no answer after
``CPU_LIMIT`` s of the worker's CPU time, or ``WALL_LIMIT`` s) or a silent change. The counts are
printed (``-s``) and recorded in docs/results.md.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np
import pytest
import torch
from torch import nn

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.nir import Executor, LoadLimits, NIRFormatError, export, load, save
from neurocuda.nir.io import CHECKSUM_KEY
from neurocuda.nir.reader import FIELD_KINDS

SEED = 13
# Per mutant (load + run take ~0.1 s of CPU). CPU time, not wall time, decides: on a machine
# shared with training a clean load can wait 15 s for a core.
CPU_LIMIT, WALL_LIMIT = 10.0, 300.0
T, BATCH, SHAPE = 3, 2, (3, 8, 8)
STRING = h5py.string_dtype()


# -- the worker (a separate process: survives nothing but reports everything) ---------------------


def _inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(T, BATCH, *SHAPE, generator=generator)


def _run(graph: nir.NIRGraph, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return Executor(graph)(x).numpy()


def _is_parameter(key: str) -> bool:
    """A float field (a node's ``metadata`` group, e.g. its layer name, is not one)."""
    if key in ("type", "metadata"):
        return False
    return FIELD_KINDS.get(key, "float") in ("float", "positive")


def structure(graph: nir.NIRGraph) -> list:
    """Everything about a graph except parameter values and metadata."""
    found: list = []
    stack = [("", graph.to_dict())]
    while stack:
        prefix, level = stack.pop()
        found.append((prefix, "edges", [tuple(e) for e in level["edges"]]))
        for name, node in sorted(level["nodes"].items()):
            if node["type"] == "NIRGraph":
                stack.append((f"{prefix}{name}.", node))
                continue
            fields = []
            for key, value in sorted(node.items()):
                if key == "metadata":
                    continue
                if _is_parameter(key):
                    fields.append((key, np.shape(value)))
                else:
                    fields.append((key, value if isinstance(value, str) else repr(value)))
            found.append((prefix + name, fields))
    return found


def _member(graph: nir.NIRGraph, dotted: str) -> nir.NIRNode:
    node: Any = graph
    for part in dotted.split("."):
        node = node.nodes[part]
    return node


def _serve(conn: Any, base: str) -> None:
    """Answer jobs: ("load", path) and ("expect", (node, field, index, value))."""
    torch.set_num_threads(1)
    x = _inputs()
    original = load(base)
    conn.send(("ready", _run(original, x), structure(original)))
    while (job := conn.recv()) is not None:
        kind, payload = job
        if kind == "expect":
            graph = load(base)
            node, field, index, value = payload
            getattr(_member(graph, node), field).flat[index] = value
            conn.send(("expected", _run(graph, x)))
            continue
        try:
            graph = load(payload)
            out = _run(graph, x)
        except (NIRFormatError, FileNotFoundError) as error:
            conn.send(("clean", f"{type(error).__name__}: {error}"))
        except Exception as error:  # any other exception is a finding
            conn.send(("crash", f"{type(error).__name__}: {error}"))
        else:
            conn.send(("loaded", out, structure(graph)))


class Worker:
    """A worker process, restarted after a hang or a crash."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.context = multiprocessing.get_context("spawn")
        self.start()

    def start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_serve, args=(child, str(self.base)))
        self.process.start()
        child.close()
        assert self.conn.poll(WALL_LIMIT), "the fuzz worker did not start"
        _, self.reference, self.structure = self.conn.recv()

    def ask(self, job: tuple) -> tuple:
        self.conn.send(job)
        cpu, wall = self.cpu_seconds(), time.monotonic()
        while not self.conn.poll(0.2):
            used = self.cpu_seconds() - cpu
            if used > CPU_LIMIT or time.monotonic() - wall > WALL_LIMIT:
                self.process.kill()
                self.process.join()
                self.start()
                return ("hang", f"no answer after {used:.1f} s of CPU")
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            self.start()
            return ("crash", f"worker died with exit code {code}")

    def cpu_seconds(self) -> float:
        """The worker's user + system CPU time (Linux /proc; 0 elsewhere: wall limit only)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(10)


# -- the file and its mutations -------------------------------------------------------------------


def exported_file(path: Path) -> Path:
    """A tiny converted CNN (conv, BN, soft-reset IF, pooling, flatten, linear; 8x8 images)
    exported as the training callback does: 31 nodes, 140 KB."""
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10),
    ).eval()  # fmt: skip
    config = ConversionConfig(calibration_batches=1, input_shape=SHAPE)
    snn = convert(ann, [torch.randn(4, *SHAPE)], config)
    graph = export(snn, torch.randn(1, *SHAPE), metadata={"timesteps": "1,2,3"})
    save(graph, path)
    with h5py.File(path, "r+") as file:  # as other tools write it: the reader alone is fuzzed
        del file.attrs[CHECKSUM_KEY]  # (with it every edited value is refused: test_nir_io.py)
    return path


def leaves(f: h5py.File) -> list[tuple[str, str, str]]:
    """(HDF5 path, dotted node name, type) of every non-graph node."""
    found, stack = [], [("node", "")]
    while stack:
        path, prefix = stack.pop()
        for name in f[path]["nodes"]:
            child = f"{path}/nodes/{name}"
            kind = f[child]["type"][()].decode()
            if kind == "NIRGraph":
                stack.append((child, f"{prefix}{name}."))
            else:
                found.append((child, prefix + name, kind))
    return sorted(found)


def graphs(f: h5py.File) -> list[str]:
    found, stack = [], ["node"]
    while stack:
        path = stack.pop()
        found.append(path)
        for name in f[path]["nodes"]:
            if f[f"{path}/nodes/{name}"]["type"][()] == b"NIRGraph":
                stack.append(f"{path}/nodes/{name}")
    return sorted(found)


def parameters(f: h5py.File, rng: np.random.Generator) -> tuple[str, str, str]:
    """A random (node path, dotted name, field) holding a float parameter."""
    options = [
        (path, name, key) for path, name, _ in leaves(f) for key in f[path] if _is_parameter(key)
    ]
    return options[rng.integers(len(options))]


def replace(group: h5py.Group, key: str, data: Any, **kwargs: Any) -> None:
    if key in group:
        del group[key]
    group.create_dataset(key, data=data, **kwargs)


def edges_of(group: h5py.Group) -> list[list[bytes]]:
    return [list(edge) for edge in group["edges"][()]]


def set_edges(group: h5py.Group, edges: list[list[bytes | str]]) -> None:
    data = np.array([[e if isinstance(e, bytes) else e.encode() for e in pair] for pair in edges])
    replace(group, "edges", data.astype(object), dtype=STRING)


def rename(f: h5py.File, path: str, new: str | bytes) -> None:
    """Rename a node and the edges of its graph that name it."""
    graph_path, old = path.rsplit("/nodes/", 1)
    graph = f[graph_path]
    graph["nodes"].move(old, new) if isinstance(new, str) else _move_bytes(graph, old, new)
    new_bytes = new if isinstance(new, bytes) else new.encode()
    set_edges(graph, [[new_bytes if e == old.encode() else e for e in p] for p in edges_of(graph)])


def _move_bytes(graph: h5py.Group, old: str, new: bytes) -> None:
    graph["nodes"][new] = graph["nodes"][old]  # a hard link under a non-UTF-8 name
    del graph["nodes"][old]


def wrap(f: h5py.File, levels: int) -> None:
    """Nest the whole graph ``levels`` deep in graphs that only pass data through."""
    shapes = {
        k: f[f"node/nodes/{n}/shape"][()]
        for n in f["node/nodes"]
        for k in ("Input", "Output")
        if f[f"node/nodes/{n}/type"][()].decode() == k
    }
    f.move("node", "inner")
    path = "node"
    for _ in range(levels):
        level = f.create_group(path)
        level.create_dataset("type", data="NIRGraph", dtype=STRING)
        set_edges(level, [["input", "graph"], ["graph", "output"]])
        for name, kind in (("input", "Input"), ("output", "Output")):
            node = level.create_group(f"nodes/{name}")
            node.create_dataset("type", data=kind, dtype=STRING)
            node.create_dataset("shape", data=shapes[kind])
        path = f"{path}/nodes/graph"
    f[path] = f["inner"]
    del f["inner"]


Mutation = Callable[[h5py.File, np.random.Generator], Any]


def nan(f, rng):
    path, _, key = parameters(f, rng)
    ds = f[path][key]
    index = np.unravel_index(rng.integers(ds.size), ds.shape) if ds.shape else ()
    ds[index] = [np.nan, np.inf, -np.inf][rng.integers(3)]


def shape_drop(f, rng):
    while True:
        path, _, key = parameters(f, rng)
        data = f[path][key][()]
        if data.ndim and data.shape[-1] > 1:
            return replace(f[path], key, data[..., :-1])


def shape_axis(f, rng):
    path, _, key = parameters(f, rng)
    replace(f[path], key, f[path][key][()][None])


def dtype_bad(f, rng):
    path, _, key = parameters(f, rng)
    data = f[path][key][()]
    options = [data.astype(complex), data > 0, data.astype(str).astype(object)]
    choice = rng.integers(3)
    replace(f[path], key, options[choice], **({"dtype": STRING} if choice == 2 else {}))


def missing_field(f, rng):
    path, _, _ = leaves(f)[rng.integers(len(leaves(f)))]
    required = [k for k in f[path] if k not in ("metadata", "input_shape", "input_type")]
    del f[path][required[rng.integers(len(required))]]


def extra_field(f, rng):
    path, _, _ = leaves(f)[rng.integers(len(leaves(f)))]
    f[path].create_dataset("bogus", data=np.ones(3))


def rename_dangling(f, rng):
    path, _, _ = leaves(f)[rng.integers(len(leaves(f)))]
    graph_path, old = path.rsplit("/nodes/", 1)
    f[graph_path]["nodes"].move(old, old + "_moved")


def edge_unknown(f, rng):
    graph = f[graphs(f)[rng.integers(len(graphs(f)))]]
    edges = edges_of(graph)
    edges.insert(rng.integers(len(edges) + 1), [edges[0][0], b"ghost"][:: rng.choice([1, -1])])
    set_edges(graph, edges)


def edge_duplicate(f, rng):
    graph = f[graphs(f)[rng.integers(len(graphs(f)))]]
    edges = edges_of(graph)
    set_edges(graph, [*edges, edges[rng.integers(len(edges))]])


def huge_shape(f, rng):
    path, _, key = parameters(f, rng)
    del f[path][key]
    shape = [(10**6, 10**6), (2**16, 2**14), (2**40,)][rng.integers(3)]
    f[path].create_dataset(
        key, shape=shape, dtype="f4", chunks=(1,) * (len(shape) - 1) + (1024,), compression="gzip"
    )


def huge_input(f, rng):
    node = next(p for p, _, kind in leaves(f) if kind == "Input")
    replace(f[node], "shape", np.array([10**6, 10**6, 3]))


def collide(f, rng):
    """Rename a top-level node to ``<subgraph>.<member>`` (edges updated): two nodes, one name."""
    top = [p for p, name, _ in leaves(f) if "." not in name]
    sub = [name for _, name, _ in leaves(f) if "." in name]
    rename(f, top[rng.integers(len(top))], sub[rng.integers(len(sub))])


def non_utf8(f, rng):
    path, _, _ = leaves(f)[rng.integers(len(leaves(f)))]
    rename(f, path, b"n\xff\xfe")


def deep(f, rng):
    wrap(f, 33 + int(rng.integers(8)))


def cycle(f, rng):
    """A graph that contains its own ancestor (an HDF5 hard link): infinitely deep."""
    graph = graphs(f)[rng.integers(len(graphs(f)))]
    f[graph]["nodes"]["loop"] = f["node"]


def many_nodes(f, rng):
    """A hard link of one node under 10,001 names: a tiny file with too many nodes."""
    path, _, _ = leaves(f)[0]
    nodes = f["node/nodes"]
    for i in range(10_001):
        nodes[f"copy{i}"] = f[path]


def type_swap(f, rng):
    path, _, kind = leaves(f)[rng.integers(len(leaves(f)))]
    other = [k for k in ("Affine", "Conv2d", "Scale", "Threshold", "I", "Flatten") if k != kind]
    replace(f[path], "type", other[rng.integers(len(other))], dtype=STRING)


def bad_stride(f, rng):
    path = next(p for p, _, kind in leaves(f) if kind in ("Conv2d", "AvgPool2d"))
    key = ("stride", "kernel_size", "padding")[rng.integers(3)]
    replace(f[path], key, np.array([0 if key != "padding" else -1, 1]))


def rename_consistent(f, rng):
    path, _, _ = leaves(f)[rng.integers(len(leaves(f)))]
    rename(f, path, f"renamed_{rng.integers(1000)}")


def widen(f, rng):
    path, _, key = parameters(f, rng)
    replace(f[path], key, f[path][key][()].astype(np.float64), compression="gzip")


def narrow_ints(f, rng):
    options = [(p, k) for p, _, _ in leaves(f) for k in f[p] if k in ("stride", "padding", "shape")]
    path, key = options[rng.integers(len(options))]
    replace(f[path], key, f[path][key][()].astype(np.int32))


def add_metadata(f, rng):
    group = f["node"].require_group("metadata")
    group.create_dataset(f"note{rng.integers(1000)}", data="fuzzed", dtype=STRING)


def uncompress(f, rng):
    path, _, key = parameters(f, rng)
    replace(f[path], key, f[path][key][()])


def nest(f, rng):
    wrap(f, 1 + int(rng.integers(3)))


def param_value(f, rng):
    path, name, key = parameters(f, rng)
    if key.startswith("tau"):
        return param_value(f, rng)
    ds = f[path][key]
    flat = ds[()].reshape(-1)
    index = int(rng.integers(flat.size))
    value = np.float32(flat[index] * 1.5 + 0.25)
    ds[np.unravel_index(index, ds.shape) if ds.shape else ()] = value
    return (name, key, index, value)


REJECT: dict[str, Mutation] = {
    f.__name__: f
    for f in (
        nan,
        shape_drop,
        shape_axis,
        dtype_bad,
        missing_field,
        extra_field,
        rename_dangling,
        edge_unknown,
        edge_duplicate,
        huge_shape,
        huge_input,
        collide,
        non_utf8,
        deep,
        cycle,
        type_swap,
        bad_stride,
    )
}
SAME: dict[str, Mutation] = {
    f.__name__: f for f in (rename_consistent, widen, narrow_ints, add_metadata, uncompress, nest)
}


def byte_mutants(data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Byte flips (anywhere, in the first 4 KB of headers, on stored names), truncations, zeros."""
    names = [
        m
        for token in (b"NIRGraph", b"Conv2d", b"_2_0", b"threshold", b"input", b"edges")
        for m in _occurrences(data, token)
    ]
    mutants = []
    for i in range(105):
        buffer = bytearray(data)
        where = i % 3
        for _ in range(1 + rng.integers(3)):
            if where == 0:
                at = int(rng.integers(len(data)))
            elif where == 1:
                at = int(rng.integers(4096))
            else:
                at = names[rng.integers(len(names))] + int(rng.integers(8))
            buffer[at] ^= int(rng.integers(1, 256))
        mutants.append((("flip", "flip_headers", "flip_names")[where], bytes(buffer)))
    for _ in range(15):
        mutants.append(("truncate", data[: int(rng.integers(len(data)))]))
    for _ in range(15):
        at = int(rng.integers(len(data) - 512))
        mutants.append(("zero_block", data[:at] + bytes(512) + data[at + 512 :]))
    return mutants


def _occurrences(data: bytes, token: bytes) -> list[int]:
    found, at = [], data.find(token)
    while at >= 0:
        found.append(at)
        at = data.find(token, at + 1)
    return found


# -- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_file(tmp_path_factory.mktemp("fuzz") / "base.nir")


def test_fuzz_load(base: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    data = base.read_bytes()
    jobs: list[tuple[str, str, Path, Any]] = []  # (expectation, mutation, file, edit)

    def mutant(name: str) -> Path:
        path = tmp_path / f"m{len(jobs)}_{name}.nir"
        shutil.copyfile(base, path)
        return path

    for expectation, table, rounds in (("reject", REJECT, 5), ("same", SAME, 4)):
        for _ in range(rounds):
            for name, mutate in table.items():
                path = mutant(name)
                with h5py.File(path, "r+") as f:
                    mutate(f, rng)
                jobs.append((expectation, name, path, None))
    for _ in range(15):
        path = mutant("param_value")
        with h5py.File(path, "r+") as f:
            edit = param_value(f, rng)
        jobs.append(("param", "param_value", path, edit))
    path = mutant("many_nodes")
    with h5py.File(path, "r+") as f:
        many_nodes(f, rng)
    jobs.append(("reject", "many_nodes", path, None))
    for name, content in byte_mutants(data, rng):
        path = tmp_path / f"m{len(jobs)}_{name}.nir"
        path.write_bytes(content)
        jobs.append(("any", name, path, None))

    worker = Worker(base)
    counts: Counter[str] = Counter()
    by_expectation = {k: Counter() for k in ("reject", "same", "param", "any")}
    failures: list[str] = []
    try:
        for expectation, name, path, edit in jobs:
            answer = worker.ask(("load", str(path)))
            outcome = classify(worker, expectation, answer, edit)
            counts[outcome] += 1
            by_expectation[expectation][outcome] += 1
            if outcome in ("crash", "hang", "silent change", "wrongly rejected"):
                failures.append(f"{name} -> {outcome} ({path.name}): {str(answer[1])[:300]}")
            elif expectation == "any" and outcome == "parameter change":
                print(f"\n{path.name}: loads with changed parameter values: {diff(base, path)}")
    finally:
        worker.close()
    elapsed = time.perf_counter() - start
    print(f"\n{len(jobs)} mutants in {elapsed:.1f} s: {_counts(counts)}")
    for expectation, found in by_expectation.items():
        print(f"  {expectation}: {_counts(found)}")
    assert not failures, "\n".join(failures)


def diff(base: Path, mutant: Path) -> list[str]:
    """HDF5 datasets whose values differ between two files with the same layout."""
    found: list[str] = []
    with h5py.File(base, "r") as a, h5py.File(mutant, "r") as b:

        def compare(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset) and not np.array_equal(item[()], b[name][()]):
                found.append(f"{name} (compression {item.compression})")

        a.visititems(compare)
    return found


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


def classify(worker: Worker, expectation: str, answer: tuple, edit: Any) -> str:
    """One of: clean error, crash, hang, unchanged, parameter change, silent change, wrongly
    rejected."""
    status = answer[0]
    if status in ("crash", "hang"):
        return status
    if status == "clean":
        return "wrongly rejected" if expectation in ("same", "param") else "clean error"
    out, found = answer[1], answer[2]
    if expectation == "reject":
        return "silent change"
    if expectation == "param":
        expected = worker.ask(("expect", edit))[1]
        return "parameter change" if np.array_equal(out, expected) else "silent change"
    if np.array_equal(out, worker.reference):
        return "unchanged"
    if expectation == "any" and found == worker.structure:
        return "parameter change"  # damaged bytes inside a parameter's data, loaded as stored
    return "silent change"


def test_huge_declared_tensor_is_refused_before_reading(base: Path, tmp_path: Path) -> None:
    path = tmp_path / "huge.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        node = leaves(f)[0][0]
        weight = next(k for k in f[node] if _is_parameter(k))
        del f[node][weight]
        f[node].create_dataset(weight, shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024))
    assert path.stat().st_size < 2 * base.stat().st_size
    with pytest.raises(NIRFormatError, match=r"declares shape \(1000000, 1000000\)"):
        load(path)


def _set_string_length(path: Path, dataset: str, index: int, length: int) -> None:
    """Overwrite the stored length of element ``index`` of a variable-length string dataset."""
    with h5py.File(path, "r") as f:
        at = f[dataset].id.get_offset() + 16 * index  # 16-byte descriptors: 8-byte addresses
    with path.open("r+b") as raw:
        raw.seek(at)
        raw.write(struct.pack("<I", length))


@pytest.mark.parametrize(("dataset", "index"), [("node/edges", 17), ("node/type", 0)])
def test_corrupt_string_length_is_refused_before_allocating(
    base: Path, tmp_path: Path, dataset: str, index: int
) -> None:
    """The fuzz's m227: one flipped byte made an edge name declare 2 GB, which libhdf5 allocated
    and touched before failing (6 s of CPU, 2.6 GB resident; a hang in a loaded CI run)."""
    path = tmp_path / "long.nir"
    shutil.copyfile(base, path)
    _set_string_length(path, dataset, index, 0x7F000004)
    start = time.process_time()
    with pytest.raises(NIRFormatError, match=r"2,130,706,436 bytes \(LoadLimits.max_string_bytes"):
        load(path)
    assert time.process_time() - start < 1.0


def test_string_layouts(base: Path, tmp_path: Path) -> None:
    """Strings in chunks, and a file after a 512-byte user block, load as the original; strings
    whose lengths cannot be read first (in the dataset header, inside a compound) are refused."""
    moved = tmp_path / "moved.nir"
    with h5py.File(base, "r") as src, h5py.File(moved, "w", userblock_size=512) as out:
        src.copy("node", out)
        edges = out["node/edges"][()]
        del out["node/edges"]
        out["node"].create_dataset("edges", data=edges, dtype=STRING, chunks=(1, 2))
    x = _inputs()
    np.testing.assert_array_equal(_run(load(moved), x), _run(load(base), x))
    compact = tmp_path / "compact.nir"
    shutil.copyfile(base, compact)
    with h5py.File(compact, "r+") as f:
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)  # low level: create_dataset makes scalars contiguous
        del f["node/type"]
        scalar = h5py.h5s.create(h5py.h5s.SCALAR)
        string = h5py.h5t.py_create(STRING, logical=True)
        stored = h5py.h5d.create(f["node"].id, b"type", string, scalar, dcpl=plist)
        stored.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(b"NIRGraph", dtype=STRING))
    with pytest.raises(NIRFormatError, match=r"field 'type' stores variable-length data .* header"):
        load(compact)
    nested = tmp_path / "nested.nir"  # strings inside a compound: lengths out of reach
    shutil.copyfile(base, nested)
    with h5py.File(nested, "r+") as f:
        record = np.dtype([("name", STRING), ("value", "f4")])
        metadata = f["node"].require_group("metadata")
        metadata.create_dataset("entry", data=np.array([("a", 1)], record))
    with pytest.raises(NIRFormatError, match="with variable-length members"):
        load(nested)


@pytest.mark.parametrize("hidden", [False, True])
def test_gzip_bomb_is_refused_before_decompressing(
    base: Path, tmp_path: Path, hidden: bool
) -> None:
    """16 MiB of zeros compressed to a few KB: declared as a tensor, or hidden in one chunk of a
    parameter that keeps its 10 elements (libhdf5 decompresses whole chunks)."""
    path = tmp_path / "bomb.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        node, _, key = parameters(f, np.random.default_rng(0))
        original = f[node][key][()]
        del f[node][key]
        gzip = {"compression": "gzip", "compression_opts": 9}
        if hidden:
            stored = f[node].create_dataset(
                key, shape=original.shape, maxshape=(None,), chunks=(2**22,), dtype="f4", **gzip
            )
            stored[...] = original
        else:
            f[node].create_dataset(key, data=np.zeros((2**22,), np.float32), **gzip)
    assert path.stat().st_size < base.stat().st_size + 2**20
    limits = LoadLimits(max_decompressed_bytes=2**23)
    start = time.process_time()  # CPU time: the machine may be busy
    with pytest.raises(NIRFormatError, match="max_decompressed_bytes"):
        load(path, limits)
    assert time.process_time() - start < 1.0
    assert original.shape == (10,)


def test_chunk_count_fails_fast(base: Path, tmp_path: Path) -> None:
    """A parameter declared as 2**20 one-element chunks (nothing written; the file stays small):
    libhdf5 would visit every chunk (5.6 s for 10**6 here); refused from the header."""
    path = tmp_path / "chunks.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        node, _, key = parameters(f, np.random.default_rng(0))
        del f[node][key]
        f[node].create_dataset(key, shape=(2**20,), chunks=(1,), dtype="f4")
    assert path.stat().st_size < base.stat().st_size + 2**16
    start = time.process_time()
    with pytest.raises(NIRFormatError, match=r"chunks of \(1,\).*LoadLimits.max_chunks"):
        load(path)
    assert time.process_time() - start < 1.0


def test_data_in_other_files_is_refused(base: Path, tmp_path: Path) -> None:
    """HDF5 lets a dataset's bytes, or a whole node, live in any other file (external storage,
    external links): a received NIR file could load, say, a key file into a bias. Refused, naming
    the fix."""
    other = tmp_path / "other.bin"
    other.write_bytes(np.arange(10, dtype=np.float32).tobytes())
    path = tmp_path / "external.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        node, _, key = parameters(f, np.random.default_rng(0))
        del f[node][key]
        f[node].create_dataset(key, shape=(10,), dtype="f4", external=[(str(other), 0, 40)])
    with pytest.raises(NIRFormatError, match=r"in other files .* re-export it"):
        load(path)
    linked = tmp_path / "linked.nir"  # a node that is another file's node (an HDF5 external link)
    shutil.copyfile(base, linked)
    with h5py.File(linked, "r+") as f:
        del f["node/nodes/_3"]
        f["node/nodes/_3"] = h5py.ExternalLink(str(base), "/node/nodes/_3")
    with pytest.raises(NIRFormatError, match=r"links '_3' to '/node/nodes/_3' in .*base.nir"):
        load(linked)


def test_node_count_and_nesting_fail_fast(base: Path, tmp_path: Path) -> None:
    """A 20,000-node graph and 400-level nesting: the limit error in well under a second."""
    chain = tmp_path / "chain.nir"
    with h5py.File(chain, "w") as f:
        nodes = f.create_group("node/nodes")
        f["node"].create_dataset("type", data="NIRGraph", dtype=STRING)
        first = nodes.create_group("s0")
        first.create_dataset("type", data="Scale", dtype=STRING)
        first.create_dataset("scale", data=np.ones(2, np.float32))
        for i in range(1, 20_000):
            nodes[f"s{i}"] = first  # hard links: a 20,000-node chain in a small file
        names = [f"s{i}" for i in range(20_000)]
        set_edges(f["node"], [list(e) for e in itertools.pairwise(names)])
    deep_file = tmp_path / "deep.nir"
    shutil.copyfile(base, deep_file)
    with h5py.File(deep_file, "r+") as f:
        wrap(f, 400)
    for path, match in ((chain, "max_edges|max_nodes"), (deep_file, "max_depth")):
        start = time.process_time()
        with pytest.raises(NIRFormatError, match=match):
            load(path)
        assert time.process_time() - start < 1.0


def test_flat_name_collision_is_refused(base: Path, tmp_path: Path) -> None:
    """The issue's case: a top-level node renamed ``_2_0.reset`` would replace a nested member."""
    path = tmp_path / "collide.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        assert "reset" in f["node/nodes/_2_0/nodes"]
        rename(f, "node/nodes/_3", "_2_0.reset")
    with pytest.raises(NIRFormatError, match=r"both named '_2_0\.reset'"):
        load(path)


def test_nan_threshold_is_refused_naming_node_and_field(base: Path, tmp_path: Path) -> None:
    path = tmp_path / "nan.nir"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        f["node/nodes/_2_0/nodes/threshold/threshold"][0, 0, 0] = np.nan
    with pytest.raises(NIRFormatError, match=r"'_2_0\.threshold' \(Threshold\), field 'threshold'"):
        load(path)


def test_executor_checks_shapes_before_running() -> None:
    def graph(shape: int, weight: tuple[int, int], r: np.ndarray) -> nir.NIRGraph:
        nodes = {
            "input": nir.Input(np.array([shape])),
            "affine": nir.Affine(weight=np.ones(weight, np.float32), bias=np.zeros(weight[0])),
            "i": nir.I(r=r),
            "output": nir.Output(np.array(r.shape)),
        }
        edges = [("input", "affine"), ("affine", "i"), ("i", "output")]
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)

    Executor(graph(4, (3, 4), np.ones(3)))  # fits
    with pytest.raises(NIRFormatError, match=r"'affine' \(Affine\) cannot take inputs of shape"):
        Executor(graph(5, (3, 4), np.ones(3)))
    for r in (np.full(5, 2.0), np.ones((2, 3))):
        with pytest.raises(NIRFormatError, match=r"'i' \(I\) has r of shape .* input shape \(3,\)"):
            Executor(graph(4, (3, 4), r))
