"""Device settings: ``auto`` follows the machine, explicit choices are kept, errors are clear.

This machine has no GPU: CUDA is simulated by patching ``torch.cuda.is_available`` (no tensor is
moved, only the chosen ``torch.device`` is checked)."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.torch_backend import TorchBackend
from neurocuda.devices import resolve_device, synchronize
from neurocuda.training.compose import compose_train_config


@pytest.fixture
def cuda_visible(monkeypatch: pytest.MonkeyPatch):
    """``cuda_visible(flag)`` makes ``torch.cuda.is_available()`` return ``flag``."""
    return lambda flag: monkeypatch.setattr(torch.cuda, "is_available", lambda: flag)


def test_auto_is_the_cpu_without_cuda(cuda_visible) -> None:
    cuda_visible(False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_picks_cuda_when_there_is_one(cuda_visible) -> None:
    cuda_visible(True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("gpu") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit CPU stays the CPU


def test_gpu_without_cuda_and_unknown_names_are_clear_errors(cuda_visible) -> None:
    cuda_visible(False)
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*device=auto"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="Unknown device 'tpu'; use one of: auto, gpu"):
        resolve_device("tpu")


def test_deploy_backends_default_to_auto(cuda_visible) -> None:
    cuda_visible(True)
    assert Loihi2Backend().device == torch.device("cuda")
    backend = TorchBackend()
    assert (backend.device, backend.name) == (torch.device("cuda"), "gpu")
    cuda_visible(False)
    assert Loihi2Backend().device == TorchBackend().device == torch.device("cpu")


@pytest.mark.parametrize(
    ("overrides", "cuda", "expected"),
    [
        ([], True, "cuda"),  # default trainer: accelerator auto
        ([], False, "cpu"),
        (["trainer=cpu"], True, "cpu"),  # trainer=cpu keeps the simulator on the CPU too
        (["deploy.backend.device=cpu"], True, "cpu"),
    ],
)
def test_loihi2_simulator_follows_the_trainer(
    overrides: list[str], cuda: bool, expected: str, cuda_visible, tmp_path: Path
) -> None:
    cuda_visible(cuda)
    cfg = compose_train_config(["deploy=loihi2", *overrides], tmp_path)
    backend = hydra.utils.instantiate(cfg.deploy.backend)
    assert backend.device == torch.device(expected)


def test_synchronize_waits_on_the_given_gpu_not_the_current_one(monkeypatch) -> None:
    """Timings of scripts and callbacks on ``cuda:1`` must wait for that GPU: a bare
    ``torch.cuda.synchronize()`` waits on the current one (``cuda:0``)."""
    calls: list[torch.device | None] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronize(torch.device("cpu"))
    synchronize(torch.device("cuda:1"))
    assert calls == [torch.device("cuda:1")]


def test_the_snn_test_runs_the_ann_on_the_snns_device(tmp_path, monkeypatch) -> None:
    """With finetune=snn the ANN came back from the trainer on the CPU while the SNN ran on the
    GPU: the first test batch failed with a device mismatch (never run on a GPU before)."""
    from types import SimpleNamespace

    from neurocuda.training import finetune_stage

    seen = {}

    def record(snn, loader, timesteps, ann, encoding):
        seen["snn"], seen["ann"] = next(snn.buffers()).device, next(ann.parameters()).device
        return SimpleNamespace(ann_accuracy=0.5, accuracy={1: 0.4}, images=0)

    monkeypatch.setattr(finetune_stage, "evaluate_snn", record)
    cfg = compose_train_config(["conversion.timesteps=[1]"], tmp_path)
    snn = SimpleNamespace(to=lambda device: SimpleNamespace(buffers=lambda: iter(
        [torch.empty(0, device=device)])))  # fmt: skip
    ann = torch.nn.Linear(2, 2)
    data = SimpleNamespace(test_dataloader=lambda: [])
    finetune_stage.snn_test_metrics(cfg, snn, data, ann, [], device=torch.device("meta"))
    assert seen == {"snn": torch.device("meta"), "ann": torch.device("meta")}
