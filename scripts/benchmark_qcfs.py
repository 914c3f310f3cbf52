"""Seconds per ANN training step with ReLU, with QCFS in tensor operations and with QCFS in the CPU
kernels of :mod:`neurocuda.models.qcfs_kernel` (``QCFS.compiled_kernel``).

    python scripts/benchmark_qcfs.py --arch cifarnet --batch 128 --rounds 8
    python scripts/benchmark_qcfs.py --arch resnet20 --levels 4

One process, the three variants alternating within each round (this machine's speed drifts
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

from neurocuda.models import build_model
from neurocuda.models.qcfs import QCFS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--arch", default="cifarnet")
    parser.add_argument("--levels", type=int, default=4, help="QCFS levels L")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds after a warm-up")
    args = parser.parse_args()
    torch.manual_seed(0)
    qcfs = {"levels": args.levels}
    nets = {
        "ReLU": build_model(args.arch),
        "QCFS, tensor ops": build_model(args.arch, activation="qcfs", activation_kwargs=qcfs),
        "QCFS, CPU kernels": build_model(args.arch, activation="qcfs", activation_kwargs=qcfs),
    }
    for module in nets["QCFS, tensor ops"].modules():
        if isinstance(module, QCFS):
            module.compiled_kernel = False
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def stepper(net: nn.Module):
        net.to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def step() -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = criterion(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return step

    steps = {name: stepper(net) for name, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds + 1):  # the first round warms up (and compiles the kernels)
        for name, step in steps.items():
            times[name].append(step())
    table = Table(title=f"{args.arch} training step, batch {args.batch}, bf16 autocast, CPU, "
                  f"{torch.get_num_threads()} threads, QCFS L={args.levels}")  # fmt: skip
    for column in ("variant", "s / step", "images/s", "time / ReLU's (median; min-max)"):
        table.add_column(column, justify="right")
    for name, measured in times.items():
        ratios = [a / b for a, b in zip(measured[1:], times["ReLU"][1:], strict=True)]
        seconds = statistics.median(measured[1:])
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{args.batch / seconds:.1f}",
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
