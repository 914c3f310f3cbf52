"""Our simulator in ``lava`` mode against lava-nc 0.10.0 itself: identical spikes, u and v.

Lava runs in its own venv (scripts/install_lava.sh, run here when the venv is missing), in a
subprocess in its own process group with a timeout; on timeout the whole group is killed (Lava's
runtime forks workers that can outlive a hung parent).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection, to_json
from neurocuda.deploy.loihi2.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
LAVA_VENV = Path(os.environ.get("LAVA_VENV", ROOT / ".cache" / "lava-venv"))
LAVA_PYTHON = LAVA_VENV / "bin" / "python"
STEPS = 12
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def lava_python() -> Path:
    """The Lava venv's interpreter, installing the venv first if it is missing."""
    if not (LAVA_VENV / ".neurocuda-lava-ok").is_file():
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install_lava.sh")],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(
                "Could not install lava-nc into "
                f"{LAVA_VENV} (scripts/install_lava.sh needs PyPI access):\n{result.stderr[-3000:]}"
            )
    return LAVA_PYTHON


def run_lava(python: Path, network: IntNetwork, inputs: dict, tmp_path: Path) -> dict:
    spec = json.loads(to_json(network))
    spec["steps"] = STEPS
    spec["input_data"] = {k: v[:, 0].tolist() for k, v in inputs.items()}
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        str(python),
        str(ROOT / "scripts" / "lava_reference.py"),
        str(spec_path),
        str(result_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"Lava did not finish within {TIMEOUT_S} s (process group killed).")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftover forked workers, if any
    assert proc.returncode == 0, f"Lava run failed:\n{err[-3000:]}"
    return json.loads(result_path.read_text())


def _rand(g: torch.Generator, lo: int, hi: int, shape) -> torch.Tensor:
    return torch.randint(lo, hi, tuple(shape), generator=g)


def _population(g, name, shape, vth, du=4095, dv=0) -> Population:
    return Population(
        name, tuple(shape), torch.tensor(vth), _rand(g, -400, 400, shape),
        _rand(g, 0, 3, shape), _rand(g, -3000, 3000, shape), du=du, dv=dv,
    )  # fmt: skip


def dense_chain(g: torch.Generator) -> tuple[IntNetwork, dict]:
    """Binary spikes -> Dense -> LIF -> Dense -> LIF -> Dense -> LIF, decays and exponents mixed."""
    net = IntNetwork(
        inputs={"x": (12,)},
        populations=[
            _population(g, "a", [10], 40, du=300, dv=100),
            _population(g, "b", [8], 25),
            _population(g, "c", [5], 12, du=1000, dv=3000),
        ],
        projections=[
            Projection("x", "a", "dense", _rand(g, -250, 255, (10, 12)), weight_exp=1),
            Projection("a", "b", "dense", _rand(g, -256, 255, (8, 10)), weight_exp=-1),
            Projection("b", "c", "dense", _rand(g, 0, 255, (5, 8)), num_weight_bits=6),
        ],
        output="c",
    )
    return net, {"x": _rand(g, 0, 2, (STEPS, 1, 12))}


def conv_net(g: torch.Generator) -> tuple[IntNetwork, dict]:
    """Graded input -> strided, padded Conv -> LIF -> Conv -> LIF -> Dense -> LIF."""
    net = IntNetwork(
        inputs={"x": (2, 6, 6)},
        populations=[
            _population(g, "a", [4, 3, 3], 60, dv=50),
            _population(g, "b", [3, 3, 3], 20),
            _population(g, "c", [4], 15),
        ],
        projections=[
            Projection(
                "x",
                "a",
                "conv",
                _rand(g, -128, 128, (4, 2, 3, 3)),
                stride=(2, 2),
                padding=(1, 1),
                graded=True,
            ),
            Projection("a", "b", "conv", _rand(g, -128, 128, (3, 4, 3, 3)), padding=(1, 1)),
            Projection("b", "c", "dense", _rand(g, -256, 255, (4, 27))),
        ],
        output="c",
    )
    return net, {"x": _rand(g, -100, 128, (STEPS, 1, 2, 6, 6))}


def fan_in(g: torch.Generator) -> tuple[IntNetwork, dict]:
    """Two inputs and a skip path summed at the receiving neurons' a_in port."""
    net = IntNetwork(
        inputs={"x": (6,), "y": (4,)},
        populations=[
            _population(g, "a", [7], 30),
            _population(g, "b", [7], 30, du=2000),
            _population(g, "c", [3], 10),
        ],
        projections=[
            Projection("x", "a", "dense", _rand(g, -256, 255, (7, 6))),
            Projection("y", "a", "dense", _rand(g, -256, 255, (7, 4)), weight_exp=2),
            Projection("a", "b", "dense", _rand(g, -256, 255, (7, 7))),
            Projection("a", "c", "dense", _rand(g, -256, 255, (3, 7))),
            Projection("b", "c", "dense", _rand(g, -256, 255, (3, 7)), weight_exp=-2),
        ],
        output="c",
    )
    inputs = {"x": _rand(g, 0, 2, (STEPS, 1, 6)), "y": _rand(g, 0, 2, (STEPS, 1, 4))}
    return net, inputs


@pytest.mark.parametrize("build", [dense_chain, conv_net, fan_in], ids=lambda f: f.__name__)
def test_simulator_matches_lava_bit_for_bit(build, lava_python: Path, tmp_path: Path) -> None:
    network, inputs = build(torch.Generator().manual_seed(7))
    lava = run_lava(lava_python, network, inputs, tmp_path)
    ours = simulate(network, inputs, STEPS, mode="lava", record=True)
    spikes = 0
    for pop in network.populations:
        for key in ("u", "v", "s"):
            mine = ours.traces[pop.name][key][:, 0]
            theirs = torch.tensor(lava["populations"][pop.name][key]).reshape(mine.shape)
            diff = (mine - theirs).abs().max().item()
            assert torch.equal(mine, theirs.to(mine.dtype)), f"{pop.name}.{key}: max diff {diff}"
        spikes += int(ours.traces[pop.name]["s"].sum())
    assert spikes > 0, "the test network never spiked; it would not test the reset"
