"""Convert a saved checkpoint to an SNN and report its accuracy per T.

    python scripts/convert.py CKPT [--out DIR] [--split test|val] [--device auto] [overrides]
    python scripts/convert.py logs/train/runs/X/checkpoints/last.ckpt conversion.timesteps=[1,2,4]

Overrides are Hydra overrides of configs/ (``conversion.*``, ``data.*``), as for train.py. Data
settings default to those the checkpoint was trained with (its saved datamodule hyperparameters);
``data.*`` overrides replace them. Writes ``<ckpt>.snn.{md,json,png}`` beside the checkpoint (or
in --out). Errors (a full disk, bad input) print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from neurocuda.checkpoint import checkpoint_datamodule, export_snn, snn_from_checkpoint
from neurocuda.cli import run_cli
from neurocuda.conversion import ConversionConfig, SNNEvaluation, evaluate_snn
from neurocuda.devices import resolve_device
from neurocuda.nir import save
from neurocuda.reporting.accuracy_plots import save_accuracy_report
from neurocuda.training.checkpoints import refuse_finetune_checkpoint
from neurocuda.training.compose import compose_train_config
from neurocuda.training.settings import validate_run_settings

ROOT = Path(__file__).resolve().parents[1]


def print_table(console: Console, ckpt: Path, evaluation: SNNEvaluation) -> None:
    table = Table(title=f"{ckpt.name}: ANN {100 * evaluation.ann_accuracy:.2f}%")
    for column in ("T", "SNN acc (%)", "gap (pp)"):
        table.add_column(column, justify="right")
    for t, acc in evaluation.accuracy.items():
        table.add_row(str(t), f"{100 * acc:.2f}", f"{100 * evaluation.gap[t]:.2f}")
    console.print(table)
    console.print(
        f"{evaluation.images} images, synops/image {evaluation.synops_per_image:.3g}, "
        f"mean spike rate {sum(evaluation.spike_rates.values()) / len(evaluation.spike_rates):.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. conversion.reset=zero")
    parser.add_argument("--out", type=Path, help="output folder (default: beside the checkpoint)")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), gpu, cuda:N or cpu"
    )
    parser.add_argument(
        "--nir", action="store_true", help="also export the SNN as <checkpoint>.nir (faithful)"
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist.")
    out_dir = args.out or args.checkpoint.parent
    beside = args.checkpoint.with_suffix(".nir")
    if args.nir and args.out is None and beside.exists():  # the run's checked file
        parser.error(
            f"--nir would replace {beside}, the training run's checked file (this conversion "
            "uses the conversion group's settings and overrides, not necessarily the run's); "
            "write it elsewhere with --out DIR."
        )
    cfg = compose_train_config(args.overrides, out_dir)
    validate_run_settings(cfg)  # e.g. data.test_subset=-5, before the data loads
    refuse_finetune_checkpoint(args.checkpoint, "checkpoint")  # and before the data
    settings = ConversionConfig.from_group(cfg.conversion)
    datamodule = checkpoint_datamodule(args.checkpoint, cfg, args.overrides)
    device = resolve_device(args.device)
    converted = snn_from_checkpoint(args.checkpoint, settings, datamodule, device)
    loader = datamodule.test_dataloader() if args.split == "test" else datamodule.val_dataloader()
    evaluation = evaluate_snn(
        converted.snn, loader, settings.timesteps, ann=converted.ann, encoding=settings.encoding
    )
    print_table(Console(), args.checkpoint, evaluation)
    extra = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "images": evaluation.images,
        "conversion": settings.as_group(),
        "spike_rates": evaluation.spike_rates,
        "synops_per_image": evaluation.synops_per_image,
    }
    prefix = out_dir / f"{args.checkpoint.name}.snn"
    paths = save_accuracy_report(prefix, evaluation.ann_accuracy, evaluation.accuracy, extra)
    if args.nir:
        sample = next(iter(loader))[0]
        graph = export_snn(converted.snn, settings, sample, checkpoint=args.checkpoint.name)
        paths.append(save(graph, out_dir / f"{args.checkpoint.stem}.nir"))
    Console().print("Wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    run_cli(main)
