"""scripts/gpu_session.sh and scripts/benchmark_gpu.py at tiny scale on the CPU: the GPU session's
preparation, and its benchmark run end to end with --quick (what the device runs in full)."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
from pathlib import Path

from scripts import benchmark_gpu
from tests.conftest import ROOT

SESSION = ROOT / "scripts" / "gpu_session.sh"


def _session(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SESSION), *args],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_prepare_copies_the_archive_and_the_missing_packages(tiny_archive, tmp_path) -> None:
    gpu_dir = tmp_path / ".gpu"
    env = {"GPU_DIR": str(gpu_dir), "NEUROCUDA_CIFAR10_ARCHIVE": str(tiny_archive)}
    done = _session(["--prepare"], env)
    assert done.returncode == 0, done.stderr
    assert (gpu_dir / "cifar10-jpeg.tar.gz").read_bytes() == tiny_archive.read_bytes()
    for package in ("hydra", "omegaconf", "antlr4", "nir", "nirtorch"):
        assert (gpu_dir / "site" / package / "__init__.py").is_file()
    # their metadata too: nir sets nir.version from it (an H200 run failed at NIR export without)
    versions = {d.metadata["Name"] for d in metadata.distributions(path=[str(gpu_dir / "site")])}
    assert versions == {"hydra-core", "omegaconf", "antlr4-python3-runtime", "nir", "nirtorch"}
    assert not list(gpu_dir.rglob("__pycache__"))
    missing = _session(["--prepare"], {**env, "NEUROCUDA_CIFAR10_ARCHIVE": str(tmp_path / "no")})
    assert missing.returncode == 1 and "set NEUROCUDA_CIFAR10_ARCHIVE" in missing.stderr


def test_session_dry_run_benchmarks_the_whole_path(tiny_archive, tmp_path) -> None:
    """train (ResNet-20 QCFS, SNN fine-tuning), SNN at T=4/8/16, exact NIR round trip and loihi2,
    through the session script with benchmark_gpu.py --quick."""
    out = tmp_path / "out"
    bench = tmp_path / "bench"
    data = f"data.source=jpeg data.cache_dir={tmp_path / 'cache'} data.val_size=40"
    env = {
        "OUT": str(out),
        "NEUROCUDA_CIFAR10_ARCHIVE": str(tiny_archive),
        "BENCH_OUT": str(bench),
        "BENCH_ARGS": data,
    }
    done = _session(["--dry-run"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "gpu_session.log").read_text()
    assert "benchmark_gpu.py exit status 0" in log and "NIR round trip" in log
    result = json.loads((out / "benchmark_gpu.json").read_text())
    assert result["quick"] is True and result["device"] == "cpu"
    assert result["train_images_per_s"] > 0 and result["fit_minutes"] > 0
    assert 0 <= result["ann_test_acc"] <= 1
    assert set(result["run_snn_test_acc"]) == set(result["converted_snn_acc"]) == {"4", "8", "16"}
    assert result["test_images"] == result["nir_images"] == 64  # the quick test subset
    assert result["nir_max_abs_diff"] == 0.0 and result["nir_divergent_images"] == 0
    assert result["loihi2_images"] == 8 and result["loihi2_images_per_s"] > 0
    assert result["loihi2_cores"] >= 1 and result["loihi2_chips"] >= 1
    assert (out / "metrics.csv").is_file() and list(out.glob("deploy_*.json"))
    assert Path(result["nir_file"]).is_file()


def test_smoke_keeps_the_device_and_model_and_forces_tiny_sizes(tmp_path) -> None:
    args = benchmark_gpu.parse_args(["--smoke", "--epochs", "30", "--finetune-epochs", "2"])
    assert (args.epochs, args.finetune_epochs, args.finetune_batches, args.loihi_images) == (
        1, 1, 2, 8,
    )  # fmt: skip
    overrides = benchmark_gpu.train_overrides(args, tmp_path)
    assert "experiment=resnet18_cifar10_qcfs" in overrides
    assert not set(benchmark_gpu.CPU_OVERRIDES) & set(overrides)
    assert set(benchmark_gpu.TINY_OVERRIDES) <= set(overrides)
    quick = benchmark_gpu.train_overrides(benchmark_gpu.parse_args(["--quick"]), tmp_path)
    assert set(benchmark_gpu.CPU_OVERRIDES) <= set(quick)


def test_session_stops_after_a_failed_preflight(tmp_path) -> None:
    """On the GPU the session runs benchmark_gpu.py --smoke first and the long run only if it
    passed (a stand-in interpreter records the calls and fails the smoke run)."""
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n[[ " $* " != *" --smoke "* ]]\n')
    python.chmod(0o755)
    env = {"OUT": str(tmp_path / "out"), "BENCH_OUT": str(tmp_path / "bench"),
           "BENCH_ARGS": "--epochs 15 finetune.optimizer.lr=3e-4"}  # fmt: skip
    done = subprocess.run(
        ["bash", str(SESSION)], env={**os.environ, **env, "PYTHON": str(python)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    log = (tmp_path / "out" / "gpu_session.log").read_text()
    assert "preflight exit status 1" in log and "benchmark_gpu.py exit status" not in log
    runs = [line for line in calls.read_text().splitlines() if "benchmark_gpu.py" in line]
    assert len(runs) == 1 and "--smoke" in runs[0] and "finetune.optimizer.lr=3e-4" in runs[0]
