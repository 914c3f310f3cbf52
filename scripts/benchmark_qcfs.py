"""Seconds per ANN training step with ReLU, with QCFS in tensor operations and with QCFS in the CPU
kernels of :mod:`neurocuda.models.qcfs_kernel` (``QCFS.compiled_kernel``); with ``--compile`` also
ReLU and QCFS with the training forward through ``torch.compile`` (``model.compile=true``).

    python scripts/benchmark_qcfs.py --arch cifarnet --batch 128 --rounds 8
    python scripts/benchmark_qcfs.py --arch resnet20 --levels 4 --compile

One process, the variants alternating within each round (this machine's speed drifts
between runs); each ratio is the median of the per-round ratios against ReLU. A step is what
``train.py`` runs per batch: forward under bfloat16 autocast (``trainer.precision=bf16-mixed``,
the CPU recipes' setting), label-smoothed cross-entropy, backward and a Nesterov SGD step, on
random images in channels-last memory (the arithmetic does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from neurocuda.models.qcfs import QCFS
from neurocuda.training import ClassifierModule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--arch", default="cifarnet")
    parser.add_argument("--levels", type=int, default=4, help="QCFS levels L")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds after two warm-up ones")
    parser.add_argument(
        "--compile", action="store_true", help="also time model.compile=true (ReLU and QCFS)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    qcfs = {"activation": "qcfs", "activation_kwargs": {"levels": args.levels}}
    variants = {"ReLU": {}, "QCFS, tensor ops": qcfs, "QCFS, CPU kernels": qcfs}
    if args.compile:
        variants |= {
            "ReLU, torch.compile": {"compile": True},
            "QCFS, torch.compile": {**qcfs, "compile": True},
        }
    nets = {name: ClassifierModule(args.arch, **settings) for name, settings in variants.items()}
    for module in nets["QCFS, tensor ops"].modules():
        if isinstance(module, QCFS):
            module.compiled_kernel = False
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def stepper(module: ClassifierModule):
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def step() -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = criterion(module.training_forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return step

    steps = {name: stepper(net) for name, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    # two warm-up rounds: the kernels compile in the first, torch.compile in the second (the
    # first training step runs eager, see ClassifierModule.training_forward)
    for _ in range(args.rounds + 2):
        for name, step in steps.items():
            times[name].append(step())
    table = Table(title=f"{args.arch} training step, batch {args.batch}, bf16 autocast, CPU, "
                  f"{torch.get_num_threads()} threads, QCFS L={args.levels}")  # fmt: skip
    for column in ("variant", "s / step", "images/s", "time / ReLU's (median; min-max)"):
        table.add_column(column, justify="right")
    for name, measured in times.items():
        ratios = [a / b for a, b in zip(measured[2:], times["ReLU"][2:], strict=True)]
        seconds = statistics.median(measured[2:])
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{args.batch / seconds:.1f}",
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
