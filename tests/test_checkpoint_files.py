"""Checkpoint files: written atomically in place (full or read-only disk: one error, nothing left),
refused when damaged (every flipped byte either detected or harmless), and a stale last.ckpt
restored on resume."""

from __future__ import annotations

import random
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from neurocuda.data import datamodule_from_checkpoint
from neurocuda.files import (
    DamagedCheckpointError,
    NotACheckpointError,
    WriteError,
    read_checkpoint,
    verify_checkpoint,
)
from neurocuda.training.checkpoints import (
    SafeCheckpointIO,
    newest_checkpoint,
    restore_last_checkpoint,
)
from neurocuda.training.instantiate import resolve_ckpt_path
from tests.conftest import remount_read_only


def _checkpoint(size: int = 64) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "global_step": 6,
        "epoch": 1,
        "state_dict": {
            "conv.weight": torch.randn(size, 3, 3, 3, generator=generator),
            "conv.bias": torch.randn(size, generator=generator),
        },
        "hyper_parameters": {"lr": 0.1, "name": "cifarnet"},
    }


def _same(a: dict, b: dict) -> bool:
    return (
        a.keys() == b.keys()
        and a["global_step"] == b["global_step"]
        and a["hyper_parameters"] == b["hyper_parameters"]
        and a["state_dict"].keys() == b["state_dict"].keys()
        and all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    )


def test_every_flipped_byte_is_refused_or_harmless(tmp_path: Path) -> None:
    path = tmp_path / "epoch_001.ckpt"
    SafeCheckpointIO().save_checkpoint(_checkpoint(), path)
    original = path.read_bytes()
    reference = read_checkpoint(path)
    rng = random.Random(0)
    positions = rng.sample(range(len(original)), 300)
    data_start = original.index(b"data/0") + 64  # the first tensor's bytes, after its header
    positions += [data_start + 4, len(original) // 2]  # certainly inside tensor data
    refused = silent = 0
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        try:
            loaded = read_checkpoint(path)
        except DamagedCheckpointError as error:
            assert str(path) in str(error) and "resume" in str(error)
            refused += 1
            continue
        silent += not _same(loaded, reference)
    assert silent == 0
    assert refused >= len(positions) * 0.8  # most bytes are data or structure; a few are padding


def test_cut_short_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save(_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DamagedCheckpointError, match=r"last\.ckpt is damaged"):
        verify_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        verify_checkpoint(tmp_path / "none.ckpt")


def test_other_files_are_named_not_damaged(tmp_path: Path) -> None:
    """An empty file, a .nir graph, a text file or a bare state_dict given as a checkpoint: the
    message said the file was damaged and advised deleting it."""
    empty, graph, text, bare = (tmp_path / n for n in ("e.ckpt", "g.nir", "t.ckpt", "s.pt"))
    empty.write_bytes(b"")
    graph.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    text.write_text("model: resnet20\n")
    torch.save({"weight": torch.ones(2)}, bare)
    cases = [(empty, "the file is empty"), (graph, r"it is an HDF5 file \(a \.nir graph\?\)"),
             (text, "it is a text file")]  # fmt: skip
    for path, what in cases:
        with pytest.raises(
            NotACheckpointError, match=rf"{path.name} is not a checkpoint .*: {what}"
        ):
            read_checkpoint(path)
    assert read_checkpoint(bare)["weight"].sum() == 2  # a torch.save file: read_checkpoint reads it
    with pytest.raises(NotACheckpointError, match=r"holding a dict without Lightning's state_dict"):
        datamodule_from_checkpoint(bare)  # before any data is decoded


def test_save_writes_in_place_and_load_checks(tmp_path: Path) -> None:
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_checkpoint(), path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left
    assert _same(io.load_checkpoint(path), _checkpoint())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DamagedCheckpointError):
        io.load_checkpoint(path)


def test_full_or_read_only_disk_gives_one_error_and_leaves_nothing(small_tmpfs: Path) -> None:
    target = small_tmpfs / "checkpoints" / "last.ckpt"
    with pytest.raises(WriteError, match=f"cannot write {target}: no space left on device"):
        SafeCheckpointIO().save_checkpoint(_checkpoint(size=4000), target)  # 430 KB > 200 KB
    assert list(target.parent.iterdir()) == []
    remount_read_only(small_tmpfs)
    with pytest.raises(WriteError, match="read-only file system"):
        SafeCheckpointIO().save_checkpoint(_checkpoint(size=1), small_tmpfs / "x.ckpt")


def test_trainer_config_uses_the_safe_io(train_cfg) -> None:
    cfg = train_cfg()
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_resume_restores_a_stale_last_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "checkpoints"
    directory.mkdir(parents=True)
    behind, ahead = _checkpoint(), _checkpoint(size=8)
    behind["global_step"] = 3
    torch.save(behind, directory / "last.ckpt")  # killed before last.ckpt's write of epoch 1
    torch.save(ahead, directory / "epoch_001.ckpt")
    cfg = OmegaConf.create({"resume": True, "paths": {"output_dir": str(tmp_path / "run")}})
    assert resolve_ckpt_path(cfg) == str(directory / "last.ckpt")
    assert _same(read_checkpoint(directory / "last.ckpt"), ahead)
    assert sorted(p.name for p in directory.iterdir()) == ["epoch_001.ckpt", "last.ckpt"]
    assert restore_last_checkpoint(directory / "last.ckpt") == directory / "last.ckpt"


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path: Path) -> None:
    older, newer = _checkpoint(), _checkpoint()
    older["global_step"] = 3
    torch.save(older, tmp_path / "epoch_000.ckpt")
    torch.save(newer, tmp_path / "epoch_001.ckpt")
    damaged = bytearray((tmp_path / "epoch_001.ckpt").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # inside a tensor: torch.load alone would not notice
    (tmp_path / "epoch_001.ckpt").write_bytes(damaged)
    assert newest_checkpoint(tmp_path) == tmp_path / "epoch_000.ckpt"
    cfg = OmegaConf.create({"ckpt_path": str(tmp_path / "epoch_001.ckpt")})
    with pytest.raises(DamagedCheckpointError, match=r"epoch_001\.ckpt is damaged"):
        resolve_ckpt_path(cfg)


def test_a_best_checkpoint_left_by_a_kill_during_its_replacement_is_removed_on_resume(
    tmp_path: Path,
) -> None:
    """Lightning drops the superseded best from its list before saving the new one and deletes
    the file after it: a run killed in between kept epoch_000.* for good after resuming."""
    from types import SimpleNamespace

    from callbacks.checkpoint import CheckpointWithNIR

    names = ["epoch_000.ckpt", "epoch_000.nir", "epoch_002.ckpt", "epoch_002.nir",
             "epoch_001.nir", "last.ckpt", "last.nir", "notes.txt"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    best = str(tmp_path / "epoch_002.ckpt")
    state = {"dirpath": str(tmp_path), "best_model_path": best, "best_model_score": 0.5,
             "best_k_models": {best: 0.5}, "kth_best_model_path": best, "kth_value": 0.5,
             "last_model_path": ""}  # fmt: skip
    trainer = SimpleNamespace(is_global_zero=True)
    last = CheckpointWithNIR(dirpath=tmp_path, filename="last", monitor=None)
    last.load_state_dict({**state, "best_model_path": str(tmp_path / "last.ckpt"),
                          "best_k_models": {}})  # fmt: skip
    last.on_train_start(trainer, None)
    model = CheckpointWithNIR(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor="val/acc")
    model.load_state_dict(state)
    model.on_train_start(trainer, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_002.ckpt", "epoch_002.nir", "last.ckpt", "last.nir", "notes.txt"]  # fmt: skip
    every_epoch = CheckpointWithNIR(dirpath=tmp_path, filename="epoch_{epoch:03d}", save_top_k=-1)
    every_epoch.load_state_dict({**state, "best_k_models": {}, "best_model_path": ""})  # none
    every_epoch.on_train_start(trainer, None)
    assert (tmp_path / "epoch_002.ckpt").is_file()
