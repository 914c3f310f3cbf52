"""Conversion ablation: ReLU vs QCFS, correction off/on, SNN fine-tuning off/on, accuracy per T.

    python scripts/benchmark_conversion.py --relu-ckpt A.ckpt --qcfs-ckpt B.ckpt   # either or both
    python scripts/benchmark_conversion.py --experiment resnet20_cpu --relu-ckpt R.ckpt
    python scripts/benchmark_conversion.py --relu-ckpt A.ckpt --finetune-batches 150 --images 10000
    python scripts/benchmark_conversion.py --quick     # tiny: trains both on a subset, all rows

For each checkpoint (trained here with ``--experiment`` and ``model.activation`` when not given)
three rows (``--variants``): converted without the initial-membrane correction, with it (the
default conversion), and the default conversion fine-tuned at ``--finetune-timesteps`` for
``--finetune-batches`` training batches (``train.py train=false finetune=snn
finetune.start_from=CKPT``), or a given ``--finetuned-ckpt``. Each row is evaluated on the test set
(default: all of it) at T = 1, 2, 4, 8, 16, 32 (``--timesteps``; the cost grows with the largest),
beside the ANN, with the CPU minutes (all threads of this process) each stage cost. Prints a
table, writes ``results.json`` and ``ablation.png`` (accuracy per T, a line per row) to --out.

    python scripts/benchmark_conversion.py --plot A/results.json B/results.json --out C

draws the rows of earlier runs in one ``ablation.png``, a panel per file named by its folder (no
evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurocuda.checkpoint import load_ann, snn_from_checkpoint  # noqa: E402
from neurocuda.cli import count, positive, run_cli  # noqa: E402
from neurocuda.conversion import ConversionConfig, evaluate_snn  # noqa: E402
from neurocuda.data import datamodule_from_checkpoint  # noqa: E402
from neurocuda.devices import resolve_device  # noqa: E402
from neurocuda.files import atomic_write_text, verify_checkpoint  # noqa: E402
from neurocuda.reporting.accuracy_plots import (  # noqa: E402
    AccuracyCurve,
    plot_accuracy_curves,
    plot_accuracy_panels,
)
from neurocuda.training import SNNFinetuneModule  # noqa: E402
from neurocuda.training.compose import compose_train_config  # noqa: E402
from train import train  # noqa: E402

TIMESTEPS = [1, 2, 4, 8, 16, 32]
VARIANTS = ["uncorrected", "corrected", "finetuned"]
QUICK = ["data=cifar10_subset", "data.train_subset=2000", "data.val_subset=200",
         "trainer.max_epochs=2", "++model.arch_kwargs.widths=[16,32,32,64]"]  # fmt: skip


@dataclass
class Row:
    """One conversion of one checkpoint, evaluated at every T."""

    activation: str
    variant: str
    checkpoint: str
    ann: float
    snn: dict[int, float]
    images: int
    cpu_minutes: dict[str, float] = field(default_factory=dict)


def cpu_minutes(stage: Callable[[], Any]) -> tuple[Any, float]:
    """``stage()`` and the CPU minutes this process spent in it (every thread counted)."""
    start = time.process_time()
    result = stage()
    return result, (time.process_time() - start) / 60


def train_checkpoint(experiment: str, activation: str, out: Path, extra: list[str]) -> Path:
    """Train ``experiment`` with ``model.activation=activation`` through train.py; its last
    checkpoint."""
    run = out / f"train_{activation}"
    overrides = [f"experiment={experiment}", f"model.activation={activation}", "~conversion",
                 "test=false", *extra]  # fmt: skip
    train(compose_train_config(overrides, run))
    return run / "checkpoints" / "last.ckpt"


def finetune_checkpoint(
    experiment: str, ckpt: Path, timesteps: int, batches: int, out: Path, extra: list[str]
) -> Path:
    """Fine-tune the default conversion of ``ckpt`` at ``timesteps`` for one epoch of
    ``batches`` batches, exactly as ``train.py`` does; the fine-tuning checkpoint."""
    run = out / f"finetune_{ckpt.parent.parent.name}_T{timesteps}"
    overrides = [f"experiment={experiment}", "train=false", "test=false", "finetune=snn",
                 f"finetune.start_from={ckpt}", f"finetune.timesteps={timesteps}",
                 "finetune.epochs=1", f"finetune.train_batches={batches}",
                 f"conversion.timesteps=[{timesteps}]", *extra]  # fmt: skip
    train(compose_train_config(overrides, run))
    return run / "checkpoints" / "finetune" / "last.ckpt"  # one epoch: also the best


def benchmark(ckpt: Path, activation: str, args: argparse.Namespace, extra: list[str]) -> list[Row]:
    """The three rows of one checkpoint."""
    datamodule = datamodule_from_checkpoint(ckpt)
    rows = []

    def evaluate(variant: str, snn: Any, ann: Any, minutes: dict[str, float]) -> None:
        test = datamodule.test_dataloader()
        ev, minutes["evaluate"] = cpu_minutes(
            lambda: evaluate_snn(snn, test, args.timesteps, ann=ann, max_images=args.images)
        )
        row = Row(activation, variant, str(ckpt), ev.ann_accuracy, ev.accuracy, ev.images, minutes)
        rows.append(row)
        print_rows(rows)

    conversions = {
        "uncorrected": ("no correction", ConversionConfig(correction_timesteps=0)),
        "corrected": ("corrected (default)", ConversionConfig()),
    }
    ann = None
    for key, (variant, settings) in conversions.items():
        if key not in args.variants:
            continue
        converted, convert = cpu_minutes(
            lambda s=settings: snn_from_checkpoint(ckpt, s, datamodule, args.device)
        )
        ann = converted.ann
        evaluate(variant, converted.snn, ann, {"convert": convert})
    if "finetuned" in args.variants and (args.finetune_batches or args.finetuned_ckpt):
        steps, batches = args.finetune_timesteps, args.finetune_batches
        minutes: dict[str, float] = {}
        finetuned = args.finetuned_ckpt
        if finetuned is None:
            finetuned, minutes["fine-tune"] = cpu_minutes(
                lambda: finetune_checkpoint(args.experiment, ckpt, steps, batches, args.out, extra)
            )
        device = resolve_device(args.device)  # the SNN and its ANN on one device, as above
        module = SNNFinetuneModule.load_from_checkpoint(verify_checkpoint(finetuned), device)
        if ann is None:
            ann = load_ann(ckpt, device)
        variant = f"corrected + fine-tuned at T={module.hparams.timesteps}" + (
            f" ({batches} batches)" if args.finetuned_ckpt is None else f" ({finetuned})"
        )
        evaluate(variant, module.spiking_model(), ann, minutes)
    return rows


def print_rows(rows: list[Row]) -> None:
    table = Table(title="SNN accuracy (%) per T on the test set; (gap = ANN - SNN, pp)")
    timesteps = sorted({t for r in rows for t in r.snn})
    for col in ("model", "conversion", "images", "ANN", *(f"T={t}" for t in timesteps),
                "CPU min"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        cells = [
            f"{100 * r.snn[t]:.2f} ({100 * (r.ann - r.snn[t]):+.2f})" if t in r.snn else "-"
            for t in timesteps
        ]
        minutes = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_minutes.items())
        table.add_row(r.activation, r.variant, str(r.images), f"{100 * r.ann:.2f}", *cells, minutes)
    Console(width=220).print(table)  # full width also when logged to a file


def curve(row: Row) -> AccuracyCurve:
    """``row`` as a plotted line (its label without the fine-tuning checkpoint's path)."""
    label = f"{row.activation}, {row.variant.split(' (')[0]}"
    return AccuracyCurve(label, {int(t): a for t, a in row.snn.items()}, row.ann)


def plot_results(files: list[Path], out: Path) -> Path:
    """The rows of earlier ``results.json`` files in ``out/ablation.png``, a panel per file."""
    panels = {}
    for path in files:
        try:
            rows = [Row(**r) for r in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError) as err:
            raise SystemExit(
                f"--plot: {path} is not a results.json of this script ({err})."
            ) from None
        panels[f"{path.parent.name} (dashed: ANN)"] = [curve(r) for r in rows]
    plot_accuracy_panels(out / "ablation.png", panels)
    return out / "ablation.png"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--experiment", default="cifarnet_cpu", help="configs/experiment recipe")
    parser.add_argument("--relu-ckpt", type=Path)
    parser.add_argument("--qcfs-ckpt", type=Path)
    parser.add_argument("--finetune-timesteps", type=positive, default=4)
    parser.add_argument("--finetune-batches", type=count, default=150,
                        help="fine-tuning batches (0: no fine-tuning row)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS,
                        help="rows measured per checkpoint (default: all)")  # fmt: skip
    parser.add_argument("--finetuned-ckpt", type=Path,
                        help="a fine-tuning checkpoint (train.py finetune=snn) of the one ANN "
                             "checkpoint given: its fine-tuned row, not re-run")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small net, data subset, 2 epochs")
    parser.add_argument("--timesteps", type=positive, nargs="+", default=TIMESTEPS,
                        help="T values evaluated (default: %(default)s)")  # fmt: skip
    parser.add_argument("--images", type=positive, help="test images (default: all; --quick: 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmark_conversion")
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), gpu, cuda:N or cpu"
    )
    parser.add_argument("--plot", type=Path, nargs="+", metavar="RESULTS_JSON",
                        help="only draw these earlier results in one plot under --out")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (train, fine-tune)")
    args = parser.parse_args(argv)
    if args.plot:
        Console().print(f"Wrote {plot_results(args.plot, args.out)}")
        return
    extra = [*(QUICK if args.quick else []), *args.overrides]
    if args.quick:
        args.images = args.images or 500
        args.finetune_batches = min(args.finetune_batches, 4)
    given = {"relu": args.relu_ckpt, "qcfs": args.qcfs_ckpt}
    for ckpt in filter(None, [*given.values(), args.finetuned_ckpt]):
        verify_checkpoint(ckpt)  # a missing or damaged file fails before any work
    if args.finetuned_ckpt and sum(c is not None for c in given.values()) != 1:
        parser.error("--finetuned-ckpt needs exactly one of --relu-ckpt / --qcfs-ckpt (its ANN).")
    train_both = not any(given.values())  # with one checkpoint given, only that one is measured
    rows: list[Row] = []
    for activation, ckpt in given.items():
        if ckpt is None and not train_both:
            continue
        train_minutes = 0.0
        if ckpt is None:
            ckpt, train_minutes = cpu_minutes(
                lambda a=activation: train_checkpoint(args.experiment, a, args.out, extra)
            )
        measured = benchmark(ckpt, activation, args, extra)
        if train_minutes:
            for row in measured:
                row.cpu_minutes = {"train": train_minutes, **row.cpu_minutes}
        rows += measured
    path = atomic_write_text(args.out / "results.json",
                             json.dumps([asdict(r) for r in rows], indent=2))  # fmt: skip
    plot_accuracy_curves(args.out / "ablation.png", [curve(r) for r in rows])
    print_rows(rows)
    Console().print(f"Wrote {path} and {args.out / 'ablation.png'}")


if __name__ == "__main__":
    run_cli(main)
