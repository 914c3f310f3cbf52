"""How many images one pass of the multi-step runtime takes; shared with the NIR executor.

Stateless layers run on ``T * b`` samples at once. On a GPU the largest batch is fastest; on a CPU
a convolution over many samples leaves the cache, and on the 2-core test machine CifarNet at T=8
ran 1.6x faster in sub-batches of 8 images (``T * b = 64``) than on 32 images at once
(docs/results.md). A convolution's result can depend on its batch size on CPU, so the native
runtime and the NIR executor must split a batch at the same places to stay bit-identical: both
call :func:`sub_batch_size`. Training (SNN fine-tuning: a call that records autograd) runs
larger passes, which its backward convolutions prefer; on the test machine its forward still
equals the runtime's bit for bit (tests/test_snn_chunking.py), and no other run must split alike.
"""

from __future__ import annotations

import torch

CPU_SAMPLES_PER_PASS = 64
"""On CPU, at most this many samples (timesteps x images, at least one image) per pass."""

CPU_TRAINING_SAMPLES_PER_PASS = 256
"""The same while training: a ResNet-20 fine-tuning step (T=4, batch 128, bf16) ran 1.13-1.28x
faster in passes of 256 samples than of 64, and slower again at 512 (docs/results.md)."""


def sub_batch_size(batch: int, timesteps: int, device: torch.device, training: bool = False) -> int:
    """Images per pass for a ``batch`` run for ``timesteps`` steps on ``device``; ``training``:
    a run that records autograd (:data:`CPU_TRAINING_SAMPLES_PER_PASS`)."""
    if device.type != "cpu":
        return batch
    samples = CPU_TRAINING_SAMPLES_PER_PASS if training else CPU_SAMPLES_PER_PASS
    return max(1, min(batch, samples // timesteps))
