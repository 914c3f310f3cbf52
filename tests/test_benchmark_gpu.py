"""scripts/gpu_session.sh and scripts/benchmark_gpu.py at tiny scale on the CPU: the GPU session's
preparation, and its benchmark run end to end with --quick (what the device runs in full)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
