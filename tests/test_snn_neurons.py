"""IF neurons, output integrator and the multi-step runtime against hand-computed traces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurocuda.snn import IFNeuron, OutputIntegrator, Scale, SpikingModel, Surrogate
from neurocuda.snn.layout import memory_format


def run(neuron: IFNeuron, values: list[float]) -> list[float]:
    x = torch.tensor(values).reshape(-1, 1)  # [T, B=1]
    return neuron.run_sequence(x).flatten().tolist()


def test_soft_reset_trace_with_half_threshold_start() -> None:
    neuron = IFNeuron(torch.tensor(1.0), torch.tensor(0.5))
    assert float(neuron.fire_level) == 0.5
    # u: .25 .5 (not > .5) .75 fire, .75+(.25-1)=0, .25, .5, .75 fire
    assert run(neuron, [0.25] * 7) == [0, 0, 1, 0, 0, 0, 1]


def test_soft_reset_trace_from_zero_membrane() -> None:
    neuron = IFNeuron(torch.tensor(1.0), torch.tensor(0.0))
    # u: .25 .5 .75 1.0 (strict >, no spike) 1.25 fire, .5, .75
    assert run(neuron, [0.25] * 7) == [0, 0, 0, 0, 1, 0, 0]


def test_hard_reset_trace_sets_offset_membrane_to_minus_v_init() -> None:
    neuron = IFNeuron(torch.tensor(1.0), torch.tensor(0.5), reset="zero")
    # u: .375, .75 fire -> -.5, -.125, .25, .625 fire -> -.5
    assert run(neuron, [0.375] * 5) == [0, 1, 0, 0, 1]
    soft = IFNeuron(torch.tensor(1.0), torch.tensor(0.5))
    # soft keeps the surplus: .375, .75 fire, .125, .5, .875 fire
    assert run(soft, [0.375] * 5) == [0, 1, 0, 0, 1]
    assert run(neuron, [0.375] * 8) != run(soft, [0.375] * 8)


def test_a_reset_to_zero_trains_with_the_surrogates_width() -> None:
    """The reset-to-zero loop (autograd, step by step) takes the width; the spikes do not."""
    x = torch.tensor([0.375, 0.2, 0.45, 0.3, 0.1]).reshape(-1, 1)  # [T, B=1]
    runs = []
    for width in (1.0, 0.5):
        neuron = IFNeuron(torch.tensor(1.0), torch.tensor(0.5), reset="zero")
        neuron.surrogate = Surrogate(width=width)
        inputs = x.clone().requires_grad_()
        spikes = neuron.run_sequence(inputs)
        spikes.sum().backward()
        runs.append((spikes.detach(), inputs.grad))
    (wide, grad_wide), (narrow, grad_narrow) = runs
    assert torch.equal(wide, narrow) and float(wide.sum()) > 0
    assert float(grad_wide.abs().sum()) > 0 and not torch.allclose(grad_wide, grad_narrow)


def test_negative_input_and_per_channel_thresholds() -> None:
    neuron = IFNeuron(
        torch.tensor([1.0, 2.0]).reshape(2, 1, 1), torch.tensor([0.5, 1.0]).reshape(2, 1, 1)
    )
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]]).reshape(3, 1, 2, 1, 1)
    spikes = neuron.run_sequence(x).reshape(3, 2)
    # channel 0 (theta 1, fire .5): u 1 fire, 1+(-1-1)=-1, -1+(1-0)=0 -> 1,0,0
    # channel 1 (theta 2, fire 1): u 1, 2 fire, 2+(1-2)=1 -> 0,1,0
    assert spikes.tolist() == [[1, 0], [0, 1], [0, 0]]


def test_invalid_neuron_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="> 0"):
        IFNeuron(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="reset"):
        IFNeuron(torch.tensor(1.0), torch.tensor(0.0), reset="bounce")  # type: ignore[arg-type]


def test_output_integrator_accumulates_sequentially() -> None:
    y = torch.tensor([1.0, 2.0, -0.5]).reshape(3, 1, 1)
    assert OutputIntegrator().run_sequence(y).flatten().tolist() == [1.0, 3.0, 2.5]


def tiny_snn() -> SpikingModel:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 6),
        nn.Sequential(
            IFNeuron(torch.full((6,), 0.5), torch.full((6,), 0.25)), Scale(torch.full((6,), 0.5))
        ),
        nn.Sequential(nn.Linear(6, 3), OutputIntegrator()),
    )
    return SpikingModel(net, input_shape=(4,))


def test_spiking_model_constant_input_equals_repeated_input() -> None:
    snn = tiny_snn()
    x = torch.randn(5, 4)
    constant = snn(x, timesteps=4)
    repeated = snn(x.expand(4, 5, 4), timesteps=4)
    assert constant.shape == (4, 5, 3)
    assert torch.equal(constant, repeated)
    # state is reset per call: the same call twice gives the same trace
    assert torch.equal(snn(x, timesteps=4), constant)


def test_spiking_model_matches_a_hand_written_loop() -> None:
    snn = tiny_snn()
    fc1, (neuron, scale), (fc2, _) = snn.network
    x = torch.randn(2, 4)
    u = torch.zeros(2, 6)
    s = torch.zeros(2, 6)
    o = torch.zeros(2, 3)
    expected = []
    total_spikes = 0.0
    for _ in range(3):
        u = u + (fc1(x) + (-neuron.threshold) * s)
        s = (u > neuron.fire_level).float()
        total_spikes += float(s.sum())
        o = o + fc2(scale(s))
        expected.append(o)
    assert torch.equal(snn(x, timesteps=3), torch.stack(expected))
    with pytest.raises(RuntimeError, match="count_spikes = True"):
        snn.spike_counts()  # not counted by default: a pass over the spikes that runs rarely need
    snn.count_spikes = True
    out = snn(x, timesteps=3)
    assert torch.equal(out, torch.stack(expected))
    (layer,) = snn.spike_counts()
    assert layer.name == "1"  # the ANN activation the neuron replaced (layer_names)
    assert layer.spikes == total_spikes > 0
    assert layer.neurons == 6 and layer.timesteps == 3 and layer.samples == 2
    assert 0.0 <= layer.rate <= 1.0


def test_spiking_model_rejects_a_mismatched_sequence() -> None:
    with pytest.raises(ValueError, match="timesteps"):
        tiny_snn()(torch.zeros(3, 2, 4), timesteps=4)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_spikes_come_out_in_the_runtime_layout_for_constant_input(
    reset: str, layout: torch.memory_format
) -> None:
    # Whatever the input's layout, spikes must be dense in the layout policy's format (on CPU
    # channels_last): the following conv rounds differently on CPU for other layouts, and the NIR
    # executor's buffers follow the same policy (found as a 1e-3 round-trip diff at T=16).
    neuron = IFNeuron(torch.full((4, 1, 1), 0.5), torch.full((4, 1, 1), 0.25), reset)
    neuron.begin_run(timesteps=3, batch_size=2)
    spikes = neuron(torch.randn(2, 4, 5, 5).to(memory_format=layout))
    assert spikes.shape == (6, 4, 5, 5)
    assert spikes.is_contiguous(memory_format=memory_format(spikes.device))
