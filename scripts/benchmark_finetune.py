"""Seconds per SNN fine-tuning step: float32 against bfloat16 autocast (``finetune.precision``),
or (``--compare kernel``) the IF layers in tensor operations against the CPU
kernels of :mod:`neurocuda.snn.cpu_kernel` (``SpikingModel.compiled_kernel``), or (``--compare
passes``, with the kernels) the inference runtime's passes of 64 samples against
training's :data:`~neurocuda.snn.chunking.CPU_TRAINING_SAMPLES_PER_PASS`, or (``--compare fusion``)
each IF layer's kernel and then its scale apart against both in one kernel node, or (``--compare
batch_norm``) the step with ``finetune.batch_norm``'s norms after the folded convolutions against
without.

    python scripts/benchmark_finetune.py --arch resnet20 --timesteps 4 --batch 128 --rounds 5
    python scripts/benchmark_finetune.py --arch resnet20 --timesteps 4 --batch 128 --compare kernel
    python scripts/benchmark_finetune.py --arch resnet20 --timesteps 4 --batch 128 --compare passes
    python scripts/benchmark_finetune.py --arch resnet20 --timesteps 4 --batch 128 --compare fusion
    python scripts/benchmark_finetune.py --arch resnet20 --timesteps 4 --batch 128 \
        --compare batch_norm --precision 32-true

One process, the two variants alternating within each round (this machine's speed drifts
between runs); the ratio is the median of the per-round ratios. A step is what the fine-tuning
stage runs per batch: the converted network at T steps (random weights, calibrated on random
images: the arithmetic does not depend on them), the cross-entropy of the output mean,
backward through time and an AdamW step, under ``torch.autocast`` for bf16-mixed as Lightning
runs it (``--precision``: the autocast of every comparison but ``precision``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import NamedTuple

import torch
from rich.console import Console
from rich.table import Table

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.devices import resolve_device, synchronize
from neurocuda.models import build_model
from neurocuda.snn import chunking
from neurocuda.training import SNNFinetuneModule
from neurocuda.training.snn_finetune import snn_structure


class Variant(NamedTuple):
    """One way to run a step."""

    bf16: bool = True  # bfloat16 autocast (finetune.precision=bf16-mixed)
    compiled: bool = True  # SpikingModel.compiled_kernel
    fused: bool = True  # SpikingModel.fuse_activations: IF layer and scale in one node
    samples: int = chunking.CPU_TRAINING_SAMPLES_PER_PASS  # CPU samples per training pass
    batch_norm: bool = False  # finetune.batch_norm


VARIANTS = {
    "precision": {"32-true": Variant(bf16=False), "bf16-mixed": Variant()},
    "kernel": {
        "tensor ops": Variant(compiled=False),
        "CPU kernels": Variant(),
    },
    "passes": {
        f"passes of {chunking.CPU_SAMPLES_PER_PASS} samples": Variant(
            samples=chunking.CPU_SAMPLES_PER_PASS
        ),
        f"passes of {chunking.CPU_TRAINING_SAMPLES_PER_PASS} samples": Variant(),
    },
    "fusion": {
        "IF kernel, then the scale": Variant(fused=False),
        "IF and scale in one kernel": Variant(),
    },
    "batch_norm": {"batch norms": Variant(batch_norm=True), "no batch norms": Variant()},
}
"""``--compare`` -> its two variants by name."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up")
    parser.add_argument("--device", default="cpu", help="cpu, gpu, cuda:N or auto")
    parser.add_argument("--compare", choices=sorted(VARIANTS), default="precision")
    parser.add_argument(
        "--precision",
        choices=("32-true", "bf16-mixed"),
        default="bf16-mixed",
        help="of every variant but --compare precision's",
    )
    args = parser.parse_args()
    variants = VARIANTS[args.compare]
    if args.compare != "precision":
        bf16 = args.precision == "bf16-mixed"
        variants = {name: variant._replace(bf16=bf16) for name, variant in variants.items()}
    device = resolve_device(args.device)
    torch.manual_seed(0)
    ann = build_model(args.arch).eval()
    images = torch.randn(args.batch, 3, 32, 32)
    snn = convert(ann, [images], ConversionConfig(calibration_batches=1))
    structure = snn_structure({"arch": args.arch}, "subtract", snn.input_shape)
    module = SNNFinetuneModule(
        snn, timesteps=args.timesteps, structure=structure, batch_norm=True
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    x, y = images.to(device), torch.randint(0, 10, (args.batch,), device=device)
    norms = module.conv_norms
    assert norms is not None
    norms.calibrate(module.snn, lambda: module(x))

    def step(variant: Variant) -> float:
        module.snn.compiled_kernel = variant.compiled
        module.snn.fuse_activations = variant.fused
        chunking.CPU_TRAINING_SAMPLES_PER_PASS = variant.samples  # read at each call
        module.conv_norms = norms if variant.batch_norm else None
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
            loss = module.loss(module.training_trace(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, variant in variants.items():
            times[name].append(step(variant))
    first, second = variants
    ratios = [a / b for a, b in zip(times[first][1:], times[second][1:], strict=True)]
    precision = "" if args.compare == "precision" else f", {args.precision}"
    table = Table(title=f"{args.arch} fine-tuning step, T={args.timesteps}, batch {args.batch}, "
                  f"{device}, {torch.get_num_threads()} threads{precision}")  # fmt: skip
    for column in ("variant", "s / step", "images/s"):
        table.add_column(column, justify="right")
    for name, measured in times.items():
        seconds = statistics.median(measured[1:])
        table.add_row(name, f"{seconds:.3f}", f"{args.batch / seconds:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"{first} time / {second} time: {statistics.median(ratios):.2f} (median of "
        f"{len(ratios)} interleaved rounds; min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
