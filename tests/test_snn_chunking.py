"""On CPU a batch runs in passes of a few images; runtime and executor split it alike."""

from __future__ import annotations

import torch

from neurocuda.metrics.spikes import SpikeMonitor
from neurocuda.snn.chunking import CPU_SAMPLES_PER_PASS, sub_batch_size
from tests.test_nir_export import T, converted, round_trip


def test_sub_batch_size_rule() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert sub_batch_size(20, T, cpu) == CPU_SAMPLES_PER_PASS // T < 20
    assert sub_batch_size(20, 1000, cpu) == 1 and sub_batch_size(3, T, cpu) == 3
    assert sub_batch_size(20, T, gpu) == 20  # a GPU takes the whole batch


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
