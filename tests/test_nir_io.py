"""NIR files: atomic save, faithful reload, and clear errors for malformed files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

from neurocuda.cli import run_cli
from neurocuda.files import WriteError
from neurocuda.nir import Executor, NIRFormatError, load, save
from tests.conftest import remount_read_only

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("dataset", ["affine/weight", "i/r"])
def test_a_value_changed_after_saving_is_refused(tmp_path, dataset):
    """HDF5 checks none of its data: a flipped bit in an uncompressed value loaded as another
    weight (3 of 40 random flips in a trained .nir loaded; one changed a Scale)."""
    path = save(small_graph(), tmp_path / "g.nir")
    with h5py.File(path, "r+") as file:  # what a flipped bit does, kept valid HDF5
        values = file[f"node/nodes/{dataset}"]
        flat = values[()].copy()
        flat.flat[0] = np.nextafter(flat.flat[0], np.float32(2))
        values[...] = flat
    with pytest.raises(NIRFormatError, match=r"g\.nir is damaged: .*SHA-256 mismatch"):
        load(path)
    nir.write(tmp_path / "plain.nir", small_graph())  # other tools' files carry no checksum
    x = torch.randn(4, 2, 3)
    assert torch.equal(Executor(load(tmp_path / "plain.nir"))(x), Executor(small_graph())(x))


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


SAVE_SCRIPT = """
import sys, nir, numpy as np
from neurocuda.cli import run_cli
from neurocuda.nir import save

def main(argv):
    weight = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
    graph = nir.NIRGraph.from_list(nir.Affine(weight=weight, bias=np.zeros(300, np.float32)))
    save(graph, argv[0])

run_cli(main)
"""


def save_in_subprocess(path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT, str(path)], capture_output=True, text=True, env=env
    )


def test_full_or_read_only_disk_gives_one_line_error_and_leaves_nothing(small_tmpfs):
    """A 360 KB graph on a 200 KB tmpfs: libhdf5 used to die there with SIGSEGV (exit 139)."""
    target = small_tmpfs / "sub" / "g.nir"
    result = save_in_subprocess(target)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert f"cannot write {target}: no space left on device" in result.stderr
    assert [p.name for p in target.parent.iterdir()] == []  # no partial file, no temp file

    remount_read_only(small_tmpfs)
    result = save_in_subprocess(small_tmpfs / "sub" / "h.nir")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot write" in result.stderr and "read-only file system" in result.stderr


def test_stale_temp_files_of_interrupted_writes_are_removed(tmp_path):
    stale = tmp_path / ".g.nir.ab12cd34.tmp"
    fresh = tmp_path / ".other.nir.zz99yy88.tmp"  # another writer's, started after this process
    unrelated = tmp_path / ".notes.tmp"
    for path in (stale, fresh, unrelated):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    os.utime(unrelated, (time.time() - 3600, time.time() - 3600))
    save(small_graph(), tmp_path / "h.nir")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, unrelated.name, "h.nir"]
    )


def test_write_error_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match=f"cannot write {blocker}/g.nir: "):
        save(small_graph(), blocker / "g.nir")


def test_run_cli_prints_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def main(argv):
        raise NIRFormatError("g.nir: node 'x' (Affine), field 'weight' holds 1 NaN\nsecond line")

    monkeypatch.setattr(sys, "argv", ["verify_nir.py"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["g.nir"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        "verify_nir.py: error: g.nir: node 'x' (Affine), field 'weight' holds 1 NaN second line "
        "(--debug shows the traceback)\n"
    )
    with pytest.raises(NIRFormatError):
        run_cli(main, ["g.nir", "--debug"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: 3, [])
    assert exit_info.value.code == 3


def test_verify_nir_reports_a_bad_file_in_one_line(tmp_path):
    graph = small_graph()
    graph.metadata = {"timesteps": "0"}
    path = save(graph, tmp_path / "g.nir")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "scripts" / "verify_nir.py"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "metadata is invalid" in result.stderr
    assert "conversion.timesteps=(0,) must be a non-empty list of integers in [1, 4096]" in (
        result.stderr
    )
    path.write_bytes(path.read_bytes()[:1000])
    result = subprocess.run([*command, "--debug"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "NIRFormatError" in result.stderr


def test_deploy_script_refuses_a_bad_file_before_loading_data(tmp_path):
    path = save(small_graph(), tmp_path / "g.nir")
    path.write_bytes(path.read_bytes()[:1000])
    command = [sys.executable, str(ROOT / "scripts" / "deploy.py"), str(path), "deploy=cpu",
               "data.source=jpeg", f"data.archive={tmp_path / 'none.tar.gz'}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "g.nir" in result.stderr  # the file, not the data
    assert "none.tar.gz" not in result.stderr
