"""End to end: train.py with deploy=loihi2, scripts/deploy.py on a file, float vs quantized."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from neurocuda.conversion import ConversionConfig
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.torch_backend import TorchBackend
from neurocuda.nir import load
from train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """One short quickstart run with deploy=loihi2; returns its output directory."""
    from neurocuda.training.compose import compose_train_config
    from tests.conftest import tiny_run_overrides

    tmp = tmp_path_factory.mktemp("deploy_e2e")
    overrides = [
        *tiny_run_overrides(tiny_archive, tmp),
        "experiment=quickstart",
        "trainer.max_epochs=2",
        "++trainer.limit_train_batches=3",
        "trainer.precision=32",
        "conversion.timesteps=[8]",
        "conversion.eval_subset=40",
        "deploy=loihi2",
        "deploy.timesteps=8",
        "deploy.max_images=40",
    ]
    train(compose_train_config(overrides, tmp / "run"))
    return tmp / "run"


def test_train_with_deploy_loihi2_writes_the_report(trained_run: Path) -> None:
    report_dir = trained_run / "deploy"
    data = json.loads((report_dir / "deploy_loihi2.json").read_text())
    assert data["target"] == "loihi2" and data["images"] == 40 and data["timesteps"] == 8
    assert data["source"].endswith(".nir")  # the NIR round trip's file, not a re-export
    assert data["target_info"]["resources"]["cores"] >= 8
    assert data["energy"]["synops"] > 0 and data["energy"]["ann_macs"] > 0
    assert (report_dir / "deploy_loihi2.md").is_file() and (
        report_dir / "deploy_loihi2.png"
    ).is_file()


def test_loihi2_accuracy_within_bound_of_float_snn(trained_run: Path, tiny_datamodule) -> None:
    """Bound: the 8-bit quantized SNN's accuracy is within 2.5 points (2 of 80 images) of the float
    SNN's, and at least 90% of the individual predictions agree."""
    nir_file = json.loads((trained_run / "deploy" / "deploy_loihi2.json").read_text())["source"]
    graph = load(nir_file)
    batches = list(tiny_datamodule.test_dataloader())
    float_backend = TorchBackend("cpu")
    float_backend.prepare(graph)
    loihi = Loihi2Backend()
    loihi.prepare(graph)
    loihi.calibrate(itertools.islice(tiny_datamodule.calibration_dataloader(), 4))
    labels, float_pred, int_pred = [], [], []
    for x, y in batches:
        labels.append(y)
        float_pred.append(float_backend.run(x, 8).logits.argmax(1))
        int_pred.append(loihi.run(x, 8).logits.argmax(1))
    labels, float_pred, int_pred = torch.cat(labels), torch.cat(float_pred), torch.cat(int_pred)
    assert labels.numel() == 80
    float_acc = (float_pred == labels).float().mean().item()
    int_acc = (int_pred == labels).float().mean().item()
    assert abs(float_acc - int_acc) <= 0.025 + 1e-9, (float_acc, int_acc)
    assert (float_pred == int_pred).float().mean().item() >= 0.9


def test_deploy_script_on_a_nir_file(
    trained_run: Path, tiny_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import scripts.deploy as deploy_script

    nir_file = json.loads((trained_run / "deploy" / "deploy_loihi2.json").read_text())["source"]
    deploy_script.main([
        nir_file, "deploy=cpu", "deploy.timesteps=4", "deploy.max_images=16",
        "data.source=jpeg", f"data.archive={tiny_archive}", f"data.cache_dir={tmp_path / 'c'}",
        "data.val_size=40", "data.batch_size=8", "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    data = json.loads((tmp_path / "out" / "deploy_cpu.json").read_text())
    assert data["target"] == "cpu" and data["images"] == 16 and data["latency_timesteps"] == 4
    # the run summary train.py prints, for this deployment
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["deployment"]
    assert summary["accuracy"] == data["accuracy"] and summary["source"] == nir_file
    assert summary["report_path"] == str(tmp_path / "out" / "deploy_cpu.md")
    printed = capsys.readouterr().out
    assert "neurocuda run summary" in printed
    row = rf"Deployment \(cpu\) +{100 * data['accuracy']:.2f}% on 16 test images"
    assert re.search(row, printed), printed


def test_a_fine_tuning_run_deploys_its_fine_tuned_snn(tiny_archive: Path, tmp_path: Path) -> None:
    """With ``finetune=snn`` the deployment runs after the stage, on the ``.nir`` of the stage's
    kept checkpoint (the SNN the run tests), not on the ANN's conversion; the summary reports it."""
    from neurocuda.training.compose import compose_train_config
    from tests.conftest import tiny_run_overrides

    overrides = [
        *tiny_run_overrides(tiny_archive, tmp_path),
        "conversion.timesteps=[1,2]",
        "conversion.calibration.batches=1",
        "conversion.eval_subset=16",
        "finetune=snn",
        "finetune.timesteps=2",
        "finetune.train_batches=2",
        "deploy=cpu",
        "deploy.timesteps=2",
        "deploy.max_images=16",
    ]
    run = tmp_path / "run"
    train(compose_train_config(overrides, run))
    kept = next((run / "checkpoints" / "finetune").glob("epoch_*.nir"))
    data = json.loads((run / "deploy" / "deploy_cpu.json").read_text())
    assert data["source"] == str(kept) and data["images"] == 16
    summary = json.loads((run / "summary.json").read_text())
    assert summary["deployment"]["source"] == str(kept)
    assert summary["finetune"]["checkpoint"] == str(kept.with_suffix(".ckpt"))


def test_train_py_deploys_the_checkpoint_it_tests(tmp_path: Path) -> None:
    """The deployment took the last conversion's file while the SNN test converts the kept
    (best) checkpoint: with ``monitor: val/acc`` the summary set two epochs side by side."""
    from types import SimpleNamespace

    from callbacks.deployment import Deployment
    from callbacks.snn_conversion import SNNConversion

    best, last = tmp_path / "epoch_003.nir", tmp_path / "last.nir"
    best.write_bytes(b"")
    last.write_bytes(b"")
    conversion = SNNConversion(ConversionConfig())
    conversion.latest = SimpleNamespace(nir_paths=[last])
    trainer = SimpleNamespace(
        lightning_module=None,
        callbacks=[conversion],
        checkpoint_callback=SimpleNamespace(best_model_path=str(best.with_suffix(".ckpt"))),
    )
    assert Deployment._graph(trainer, torch.zeros(1)) == (best, str(best))
    best.unlink()  # no file beside the kept checkpoint: the last conversion's
    assert Deployment._graph(trainer, torch.zeros(1)) == (last, str(last))
