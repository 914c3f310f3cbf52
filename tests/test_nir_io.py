"""NIR files: atomic save, faithful reload, and clear errors for malformed files."""

from __future__ import annotations

import os

import h5py
import nir
import numpy as np
import pytest
import torch

from neurocuda.nir import Executor, load, save


def small_graph() -> nir.NIRGraph:
    return nir.NIRGraph.from_list(
        nir.Affine(weight=np.eye(3, dtype=np.float32), bias=np.zeros(3, np.float32)),
        nir.I(r=np.ones(3, np.float32)),
    )


def test_save_is_atomic_and_reload_runs(tmp_path):
    path = save(small_graph(), tmp_path / "sub" / "g.nir")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["g.nir"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600
    x = torch.randn(4, 2, 3)
    assert torch.equal(Executor(load(path))(x), Executor(small_graph())(x))


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nir, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save(small_graph(), tmp_path / "g.nir")
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope.nir")


def test_truncated_file(tmp_path):
    path = save(small_graph(), tmp_path / "g.nir")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load(path)


def test_not_a_nir_file(tmp_path):
    path = tmp_path / "g.nir"
    with h5py.File(path, "w") as f:
        f.create_dataset("something", data=1)
    with pytest.raises(ValueError, match="not a NIR file"):
        load(path)


def edit(path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f["node"])


def test_wrong_node_fields_name_the_node(tmp_path):
    path = save(small_graph(), tmp_path / "g.nir")
    edit(path, lambda g: g["nodes"]["affine"].__delitem__("bias"))
    with pytest.raises(ValueError, match=r"'affine' \(Affine\) lacks field\(s\) \['bias'\]"):
        load(path)

    path = save(small_graph(), tmp_path / "h.nir")
    edit(path, lambda g: g["nodes"]["i"].create_dataset("tau", data=np.ones(3)))
    with pytest.raises(ValueError, match=r"'i' \(I\) has unknown field\(s\) \['tau'\]"):
        load(path)

    path = save(small_graph(), tmp_path / "k.nir")

    def retype(g):
        del g["nodes"]["i"]["type"]
        g["nodes"]["i"].create_dataset("type", data="Spiky", dtype=h5py.string_dtype())

    edit(path, retype)
    with pytest.raises(ValueError, match="unknown type 'Spiky'"):
        load(path)


def test_dangling_edge(tmp_path):
    path = save(small_graph(), tmp_path / "g.nir")

    def dangle(g):
        edges = [*g["edges"][()].tolist(), [b"i", b"ghost"]]
        del g["edges"]
        g.create_dataset("edges", data=np.array(edges, dtype=object), dtype=h5py.string_dtype())

    edit(path, dangle)
    with pytest.raises(ValueError, match="ghost"):
        load(path)


def test_cycle_without_state_fails_at_execution(tmp_path):
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([2])),
            "a": nir.Scale(scale=np.ones(2, np.float32)),
            "b": nir.Scale(scale=np.ones(2, np.float32)),
            "output": nir.Output(np.array([2])),
        },
        edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
    )
    loaded = load(save(graph, tmp_path / "g.nir"))
    with pytest.raises(ValueError, match=r"\['a', 'b'\] form a cycle without a stateful node"):
        Executor(loaded)
