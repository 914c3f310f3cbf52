"""Executor speed against the native runtime and nirtorch's interpreter, and a full round trip.

    python scripts/benchmark_nir.py --quick            # cifarnet only, few images, 3 repeats
    python scripts/benchmark_nir.py                    # resnet18 + cifarnet at T=8
    python scripts/benchmark_nir.py --checkpoint CKPT  # + round trip on all test images at T=32

Speed: random-init models with BN statistics (speed does not depend on training), one batch, the
best of ``--repeats`` interleaved runs of each engine. Prints ratios executor/native and
nirtorch/executor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from neurocuda.cli import positive, run_cli
from neurocuda.conversion import ConversionConfig, convert
from neurocuda.files import verify_checkpoint
from neurocuda.models import build_model
from neurocuda.nir import Executor, export
from neurocuda.nir.interop import run_with_nirtorch
from neurocuda.nir.verify import compare
from neurocuda.progress import progress

ROOT = Path(__file__).resolve().parents[1]


def random_snn(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(arch).eval()
    for module in ann.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return convert(ann, [torch.randn(16, 3, 32, 32)], ConversionConfig(calibration_batches=1))


@torch.no_grad()
def speed(arch: str, batch: int, steps: int, repeats: int) -> dict[str, float]:
    snn = random_snn(arch)
    x = torch.randn(batch, 3, 32, 32)
    graph = export(snn, x[:1])
    executor = Executor(graph)
    sequence = x.expand(steps, *x.shape).contiguous()
    assert torch.equal(snn(x, steps), executor(sequence)), "round trip not exact"
    engines = {
        "native": lambda: snn(x, steps),
        "executor": lambda: executor(sequence),
        "nirtorch": lambda: run_with_nirtorch(graph, sequence),
    }
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(repeats):  # interleaved, so load from other processes hits all engines alike
        for name, fn in engines.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def round_trip(args: argparse.Namespace, console: Console) -> None:
    from neurocuda.checkpoint import export_snn, snn_from_checkpoint
    from neurocuda.data import datamodule_from_checkpoint

    # converted on the run's own calibration images (its data settings), as train.py did; a
    # default datamodule with --batch-size gave other thresholds (T=4: 42.97% instead of 44.53%)
    converted = snn_from_checkpoint(args.checkpoint)
    dm = datamodule_from_checkpoint(args.checkpoint, eval_batch_size=args.batch_size)
    dm.setup("test")
    snn = converted.snn
    x, _ = next(iter(dm.test_dataloader()))
    executor = Executor(export_snn(snn, converted.settings, x))
    loader = dm.test_dataloader()
    start = time.perf_counter()
    with progress("round trip", len(loader.dataset)) as advance:  # lines in a log, a bar on a tty
        report = compare(executor, snn, loader, [args.round_trip_t], on_batch=advance)
    t = args.round_trip_t
    console.print(
        f"round trip {args.checkpoint} on {report.images} test images at T={t}: max abs diff "
        f"{report.max_abs_diff[t]:g}, divergent images {report.divergent_images[t]}, "
        f"NIR acc {100 * report.accuracy('nir')[t]:.2f}%, native acc "
        f"{100 * report.accuracy('native')[t]:.2f}% ({time.perf_counter() - start:.0f} s)"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="cifarnet, batch 8, 3 repeats")
    parser.add_argument("--timesteps", type=positive, default=8)
    parser.add_argument("--batch", type=positive, default=None, help="default 32 (--quick: 8)")
    parser.add_argument("--repeats", type=positive, default=None, help="default 5 (--quick: 3)")
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint for the round trip")
    parser.add_argument("--round-trip-t", type=positive, default=32)
    parser.add_argument("--batch-size", type=positive, default=250)
    args = parser.parse_args(argv)
    if args.checkpoint:
        verify_checkpoint(args.checkpoint)  # a missing or damaged file fails before the speed runs
    console = Console()
    archs = ["cifarnet"] if args.quick else ["cifarnet", "resnet18"]
    batch = args.batch or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 5)
    table = Table(title=f"T={args.timesteps}, batch {batch}, best of {repeats} (s)")
    for column in ["model", "native", "executor", "nirtorch", "executor/native", "nirtorch/exec"]:
        table.add_column(column, justify="right")
    for arch in archs:
        best = speed(arch, batch, args.timesteps, repeats)
        seconds = [f"{best[k]:.3f}" for k in ("native", "executor", "nirtorch")]
        ratios = [
            f"{best['executor'] / best['native']:.3f}",
            f"{best['nirtorch'] / best['executor']:.2f}",
        ]
        table.add_row(arch, *seconds, *ratios)
    console.print(table)
    if args.checkpoint:
        round_trip(args, console)
    return 0


if __name__ == "__main__":
    run_cli(main)
