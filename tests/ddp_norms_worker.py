"""A worker of tests/test_finetune.py's DDP batch-norm test: one gloo process calibrating the
fine-tuning stage's batch norms on its own batch (run as ``python -m tests.ddp_norms_worker``)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.training.conv_norms import ConvNorms


def network():
    """A converted two-conv network (its BatchNorm folded: a normalised convolution)."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()  # fmt: skip
    return convert(ann, [torch.randn(8, 3, 6, 6)], ConversionConfig(input_shape=(3, 6, 6)))


def batch(rank: int) -> torch.Tensor:
    return torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(100 + rank)) * (1 + rank)


def main(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    snn = network()
    norms = ConvNorms(snn)
    norms.calibrate(snn, lambda: snn(batch(rank), 2))
    torch.save({k: v.clone() for k, v in norms.state_dict().items()}, f"{out}.{rank}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
