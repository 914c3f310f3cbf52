"""Files other tools write: wrong declared types, recurrent biases, time constants in seconds."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch

from neurocuda.nir import Executor, NIRFormatError, load


def _affine(out: int, inp: int, bias: float = 0.0) -> nir.Affine:
    weight = np.arange(1, out * inp + 1, dtype=np.float32).reshape(out, inp) / 10
    return nir.Affine(weight=weight, bias=np.full(out, bias, np.float32))


def test_declared_output_shape_disagreeing_with_inference_loads_with_a_warning(tmp_path):
    nodes = {
        "input": nir.Input(input_type=np.array([3])),
        "fc": _affine(2, 3),
        "output": nir.Output(output_type=np.array([4])),  # the producer declared the wrong shape
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "output")], type_check=False)
    path = tmp_path / "wrong_type.nir"
    nir.write(path, graph)
    with pytest.raises(NIRFormatError, match=r"strict=False"):
        load(path)
    with pytest.warns(UserWarning, match=r"fc\.output: \[\[2\]\] -> output\.input: \[\[4\]\]"):
        loaded = load(path, strict=False)
    with pytest.warns(UserWarning, match=r"'output' \(Output\) declares shape \(4,\) but receives"):
        executor = Executor(loaded)
    x = torch.randn(2, 5, 3)
    expected = x @ torch.from_numpy(nodes["fc"].weight).T
    torch.testing.assert_close(executor(x), expected, rtol=0, atol=1e-6)


def test_recurrent_bias_arrives_at_the_first_step():
    """IF -> Affine(w=0.5, b=0.4) -> IF: at t = 0 the Affine sees zero spikes, so 0.4 arrives.

    Hand-computed with x = 0.3 (threshold 1, reset to 0): v_0 = 0.3 + 0.4 = 0.7 (no spike),
    v_1 = 0.7 + 0.3 + 0.4 = 1.4 (spike), then v = 0.3 + (0.5 + 0.4) = 1.2 at every step (spike).
    Delivering nothing at t = 0 would give v_1 = 1.0 (no spike) instead.
    """
    nodes = {
        "input": nir.Input(input_type=np.array([1])),
        "lif": nir.IF(
            r=np.ones(1, np.float32),
            v_threshold=np.ones(1, np.float32),
            v_reset=np.zeros(1, np.float32),
        ),
        "rec": nir.Affine(weight=np.array([[0.5]], np.float32), bias=np.array([0.4], np.float32)),
        "output": nir.Output(output_type=np.array([1])),
    }
    edges = [("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    x = torch.full((5, 1, 1), 0.3)
    spikes = Executor(graph)(x)
    assert spikes.flatten().tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_time_constants_in_seconds_at_dt_one_warn_once_naming_node_tau_and_dt():
    def lif(tau: float) -> nir.LIF:
        ones = np.ones(2, np.float32)
        return nir.LIF(tau=ones * tau, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)

    nodes = {
        "input": nir.Input(input_type=np.array([2])),
        "lif1": lif(1e-3),
        "lif2": lif(2e-3),
        "output": nir.Output(output_type=np.array([2])),
    }
    edges = [("input", "lif1"), ("lif1", "lif2"), ("lif2", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    with pytest.warns(UserWarning, match="time step") as record:
        Executor(graph)
    messages = [str(w.message) for w in record if "time step" in str(w.message)]
    assert len(messages) == 1  # once, for the first node
    message = messages[0]
    assert "'lif1'" in message and "tau = 0.001" in message and "dt = 1" in message
    assert "Executor(graph, dt=1e-4)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Executor(graph, dt=1e-4)


def _single_if() -> nir.NIRGraph:
    ones = np.ones(1, np.float32)
    nodes = {
        "input": nir.Input(input_type=np.array([1])),
        "if": nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones),
        "output": nir.Output(output_type=np.array([1])),
    }
    return nir.NIRGraph(nodes=nodes, edges=[("input", "if"), ("if", "output")])


def test_sinabs_convention_fires_several_spikes_on_reaching_threshold_and_floors_v():
    """Hand-computed, threshold 1: v = 2.5 -> 2 spikes, v = 0.5; 0.5 - 3 = -2.5 is floored at -1;
    -1 + 0.25 = -0.75; -0.75 + 1 = 0.25; 0.25 + 0.75 = 1.0 -> 1 spike (sinabs fires on >=)."""
    x = torch.tensor([2.5, -3.0, 0.25, 1.0, 0.75]).reshape(5, 1, 1)
    spikes = Executor(_single_if(), convention="sinabs")(x).flatten().tolist()
    assert spikes == [2.0, 0.0, 0.0, 0.0, 1.0]
    # NIR's reset by subtraction: one spike, no floor, and v = 1.0 does not fire
    assert Executor(_single_if(), convention="subtract")(x).flatten().tolist()[0] == 1.0


def test_snntorch_convention_refuses_nodes_snntorch_does_not_write():
    with pytest.raises(ValueError, match="convention='snntorch' runs the LIF nodes"):
        Executor(_single_if(), convention="snntorch")


def test_a_file_snntorch_writes_runs_with_its_spikes(tmp_path):
    """snnTorch (a dev extra) exports Linear -> Leaky -> Linear -> Leaky and computes its spikes;
    our executor with convention='snntorch' at dt = 1e-4 gives the same spikes, bit for bit."""
    from scripts.interop_runner import produce_snntorch

    x = 4 * torch.rand(20, 4, 5, generator=torch.Generator().manual_seed(0))
    theirs = produce_snntorch(str(tmp_path / "snntorch.nir"), x)
    graph = load(tmp_path / "snntorch.nir", strict=False)
    ours = Executor(graph, dt=1e-4, convention="snntorch")(x)
    assert theirs.sum() > 20  # the network fires
    assert torch.equal(ours, theirs)
    # NIR's own reading (reset to v_reset = 0) of the same file does not reproduce snnTorch
    assert not torch.equal(Executor(graph, dt=1e-4)(x), theirs)


def test_spikingjelly_convention_fires_on_reaching_the_threshold():
    x = torch.tensor([0.5, 0.5, 0.25]).reshape(3, 1, 1)  # v = 0.5, 1.0 (spike, reset), 0.25
    assert Executor(_single_if(), convention="spikingjelly")(x).flatten().tolist() == [0, 1, 0]
    assert Executor(_single_if())(x).flatten().tolist() == [0, 0, 1]  # NIR: v = 1.25 > 1
