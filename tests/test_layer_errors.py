"""neurocuda.metrics.layer_errors and scripts/layer_errors.py: IF layers against ideal rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from neurocuda.conversion import ConversionConfig, convert, evaluate_snn
from neurocuda.metrics.layer_errors import layer_errors

ROOT = Path(__file__).resolve().parents[1]
T = 4


def ideal_rate(x: torch.Tensor, theta: torch.Tensor, v_init: torch.Tensor) -> torch.Tensor:
    """Written out from docs/semantics.md: spikes of an IF neuron (reset by subtraction, strict
    '>') after T steps of a constant input x, times theta / T."""
    count = torch.zeros_like(x)
    u = torch.zeros_like(x)
    for _ in range(T):
        u = u + x
        fired = u > theta - v_init
        count, u = count + fired, torch.where(fired, u - theta, u)
    return count * theta / T


@pytest.fixture(scope="module")
def mlp_snn() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A random 3-layer MLP converted (per-layer thresholds, no correction) and 4 batches."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 5))  # fmt: skip
    x = torch.randn(4, 50, 3, 2, 2)
    settings = ConversionConfig(input_shape=(3, 2, 2), correction_timesteps=0, per_channel=False)
    snn = convert(ann, [(x[0], None)], settings)
    return snn, [(xb, torch.zeros(50, dtype=torch.long)) for xb in x]


def test_the_rate_reference_is_the_network_quantised_to_t_levels(mlp_snn) -> None:
    snn, batches = mlp_snn
    net = snn.network
    (first, second) = [m for m in net if hasattr(m, "begin_buffered_runs")]

    def reference(x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for linear, pair in ((net[1], first), (net[3], second)):
            h = ideal_rate(linear(h), pair[0].threshold, pair[0].v_init)
        return net[5][0](h)

    # labels = the reference's own predictions: it scores 100% exactly when it is that network
    labelled = [(x, reference(x).argmax(-1)) for x, _ in batches]
    report = layer_errors(snn, labelled, T, progress=False)
    assert report.images == 200 and report.reference_accuracy == 1.0
    # the hooks do not change the SNN: its accuracy is the runtime's
    assert report.snn_accuracy == evaluate_snn(snn, labelled, [T], progress=False).accuracy[T]
    assert report.snn_accuracy < 1.0  # T=4 spike trains are uneven: the two differ here
    assert [layer.name for layer in report.layers] == ["2", "4"]
    assert layer_errors(snn, labelled, T, max_images=70, progress=False).images == 70
    # the first IF layer sees a constant input: it fires exactly its ideal count
    exact, uneven = report.layers
    assert exact.off_fraction == exact.excess_spikes == exact.local_error == exact.drift == 0.0
    assert 0.0 < exact.rate < 1.0
    # the second sees spike trains: some neurons miss their ideal count, and the error shows
    assert 0.0 < uneven.off_fraction < 0.5 and uneven.local_error > 0.0 and uneven.drift > 0.0


def test_layer_errors_refuses_what_it_cannot_measure(mlp_snn) -> None:
    snn, batches = mlp_snn
    with pytest.raises(ValueError, match="timesteps must be >= 1"):
        layer_errors(snn, batches, 0, progress=False)
    with pytest.raises(ValueError, match="no images"):
        layer_errors(snn, [], T, progress=False)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))
    settings = ConversionConfig(input_shape=(3, 2, 2), correction_timesteps=0, reset="zero")
    hard = convert(ann, [(batches[0][0], None)], settings)
    with pytest.raises(ValueError, match="reset by subtraction"):
        layer_errors(hard, batches, T, progress=False)


def test_layer_errors_script_on_a_checkpoint(relu_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = [sys.executable, "scripts/layer_errors.py", str(relu_checkpoint), "--timesteps", "2",
           "--num-images", "8", "--out", str(out)]  # fmt: skip
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rate reference" in done.stdout
    record = json.loads((out / "relu.ckpt.layers_T2.json").read_text())
    assert record["split"] == "val" and record["images"] == 8 and record["timesteps"] == 2
    assert len(record["layers"]) >= 2 and (out / "relu.ckpt.layers_T2.png").stat().st_size > 0
    missing = subprocess.run([*run[:2], str(tmp_path / "none.ckpt")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
