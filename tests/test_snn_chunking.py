"""On CPU a batch runs in passes of a few images; runtime and executor split it alike."""

from __future__ import annotations

import pytest
import torch

from neurocuda.metrics.spikes import SpikeMonitor
from neurocuda.snn import IFNeuron, SpikingActivation
from neurocuda.snn.chunking import (
    CPU_SAMPLES_PER_PASS,
    CPU_TRAINING_SAMPLES_PER_PASS,
    sub_batch_size,
)
from tests.test_nir_export import T, converted, round_trip


def test_sub_batch_size_rule() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert sub_batch_size(20, T, cpu) == CPU_SAMPLES_PER_PASS // T < 20
    assert sub_batch_size(20, 1000, cpu) == 1 and sub_batch_size(3, T, cpu) == 3
    assert sub_batch_size(20, T, gpu) == 20  # a GPU takes the whole batch
    assert CPU_TRAINING_SAMPLES_PER_PASS > CPU_SAMPLES_PER_PASS
    assert sub_batch_size(200, T, cpu, training=True) == CPU_TRAINING_SAMPLES_PER_PASS // T
    assert sub_batch_size(200, T, gpu, training=True) == 200


def test_a_call_that_builds_a_graph_takes_the_training_passes() -> None:
    snn = converted("cifarnet")
    first_conv = next(m for m in snn.network.modules() if isinstance(m, torch.nn.Conv2d))
    passes = []
    first_conv.register_forward_hook(lambda _m, i, _o: passes.append(i[0].shape[0]))
    batch = CPU_TRAINING_SAMPLES_PER_PASS // T + 3
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        inference = snn(x, T)
    small = sub_batch_size(batch, T, torch.device("cpu"))
    assert passes == [small] * (batch // small) + [batch % small] * (batch % small > 0)
    passes.clear()
    snn.requires_grad_(True)
    training = snn(x, T)
    big = CPU_TRAINING_SAMPLES_PER_PASS // T
    assert passes == [big, 3]  # the first convolution runs once per pass (constant input)
    training.sum().backward()
    assert first_conv.weight.grad is not None
    assert torch.equal(training.detach(), inference)  # docs/semantics.md: the same operations


def test_passes_equal_separate_runs_and_the_executor(tmp_path) -> None:
    snn = converted("cifarnet")
    size = sub_batch_size(20, T, torch.device("cpu"))
    x = torch.randn(20, 3, 32, 32)
    native, executed, _ = round_trip(snn, x, tmp_path)
    with torch.no_grad(), SpikeMonitor(snn) as whole_monitor:
        assert torch.equal(snn(x, T), native)
    whole_counts = [layer.spikes for layer in snn.spike_counts()]
    assert snn.last_run == (T, 20)
    parts, counts, synops = [], [0.0] * len(whole_counts), 0.0
    for part in (x[:size], x[size:]):
        with torch.no_grad(), SpikeMonitor(snn) as monitor:
            parts.append(snn(part, T))
        counts = [c + layer.spikes for c, layer in zip(counts, snn.spike_counts(), strict=True)]
        synops += monitor.stats().synops_per_image * len(part)
    assert torch.equal(native, torch.cat(parts, dim=1))  # passes are just separate runs
    assert torch.equal(native, executed)  # the executor splits at the same images
    assert whole_counts == counts
    stats = whole_monitor.stats()
    assert stats.synops_per_image * 20 == synops > 0  # ops after the first neuron, every pass
    assert stats.input_ops_per_image > 0


@pytest.mark.parametrize("arch", ["cifarnet", "resnet20"])
def test_fused_activations_equal_the_modules_run_one_by_one(arch, monkeypatch) -> None:
    snn = converted(arch)
    pairs = [m for m in snn.network.modules() if isinstance(m, SpikingActivation)]
    x = torch.randn(40, 3, 32, 32)  # passes of 16, 16 and 8 images at T=4
    buffers = []
    work_buffer = IFNeuron.work_buffer
    counted = staticmethod(lambda x: buffers.append(1) or work_buffer(x))
    monkeypatch.setattr(IFNeuron, "work_buffer", counted)
    with torch.no_grad():
        with SpikeMonitor(snn) as monitor:  # its hooks leave the fusion on
            fused = snn(x, T)
        fused_counts = [layer.spikes for layer in snn.spike_counts()]
        assert len(buffers) == 2 * len(pairs)  # one per pass size: reused from pass to pass
        assert all(pair._buffer is None for pair in pairs)  # freed at the end of the call
        kept = []
        for pair in pairs:  # a hook that keeps the spikes turns the fusion off
            pair[0].register_forward_hook(lambda _m, _i, out: kept.append(out))
        buffers.clear()
        snn.count_spikes = True
        unfused = snn(x, T)
    assert len(buffers) == 3 * len(pairs) == len(kept)  # a buffer per pass and neuron
    assert torch.equal(fused, unfused)
    assert fused_counts == [layer.spikes for layer in snn.spike_counts()]
    with torch.no_grad(), SpikeMonitor(snn) as unfused_monitor:
        snn(x, T)
    assert monitor.stats() == unfused_monitor.stats()  # synops counted after the first neuron
    assert all(set(spikes.unique().tolist()) <= {0.0, 1.0} for spikes in kept)  # not scaled


@pytest.mark.parametrize("arch", ["cifarnet", "resnet20"])
def test_an_output_a_hook_keeps_is_not_overwritten_by_the_next_pass(arch) -> None:
    """A hook on a converted activation (named like the ANN's, the natural place to record it)
    that keeps its output across the passes of one call: the fusion is off, nothing reused."""
    snn = converted(arch)
    pairs = [m for m in snn.network.modules() if isinstance(m, SpikingActivation)]
    x = torch.randn(40, 3, 32, 32)  # passes of 16, 16 and 8 images at T=4
    kept: dict[int, list[torch.Tensor]] = {}
    copied: dict[int, list[torch.Tensor]] = {}
    for i, pair in enumerate(pairs):
        pair.register_forward_hook(lambda _m, _i, out, i=i: kept.setdefault(i, []).append(out))
        pair.register_transient_hook(
            lambda _m, _i, out, i=i: copied.setdefault(i, []).append(out.clone())
        )
    with torch.no_grad():
        snn(x, T)
    for i in range(len(pairs)):
        assert len(kept[i]) == 3
        assert all(torch.equal(a, b) for a, b in zip(kept[i], copied[i], strict=True))
