"""Where a spiking model loses accuracy at T steps: each IF layer against its ideal rate.

    python scripts/layer_errors.py CKPT [--timesteps 4] [--split val|test] [overrides...]
    python scripts/layer_errors.py logs/.../checkpoints/finetune/epoch_015.ckpt --timesteps 4

CKPT is an ANN checkpoint (converted with the ``conversion.*`` overrides, on its own calibration
images) or a fine-tuned SNN's. For every IF layer: its spike rate, the share of neurons whose
count differs from the ideal count for their mean input (unevenness error), its own relative
error and the error accumulated up to it, against the *rate reference* (the network with each IF
layer replaced by its ideal rate, i.e. quantised to T levels), whose accuracy is printed beside
the SNN's (:mod:`neurocuda.metrics.layer_errors`). Writes ``<ckpt>.layers_T{T}.{json,png}``
beside the checkpoint (or in --out). Choose recipes on ``--split val`` (the default).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from neurocuda.checkpoint import (
    checkpoint_datamodule,
    refuse_conversion_overrides,
    snn_from_checkpoint,
)
from neurocuda.cli import count, positive, run_cli
from neurocuda.conversion import ConversionConfig
from neurocuda.data import CIFAR10DataModule
from neurocuda.devices import resolve_device
from neurocuda.files import atomic_write_text, save_figure
from neurocuda.metrics.layer_errors import LayerErrorReport, layer_errors
from neurocuda.snn import SpikingModel
from neurocuda.training.checkpoints import is_finetune_checkpoint
from neurocuda.training.compose import compose_train_config
from neurocuda.training.settings import validate_run_settings
from neurocuda.training.snn_finetune import load_finetuned


def spiking_model(
    args: argparse.Namespace, out_dir: Path
) -> tuple[SpikingModel, CIFAR10DataModule]:
    """The checkpoint's SNN (fine-tuned as saved, an ANN converted) and its datamodule."""
    cfg = compose_train_config(args.overrides, out_dir)
    validate_run_settings(cfg)  # e.g. data.test_subset=-5, before the data loads
    datamodule = checkpoint_datamodule(args.checkpoint, cfg, args.overrides)
    if is_finetune_checkpoint(args.checkpoint):
        refuse_conversion_overrides(args.checkpoint, args.overrides)
        datamodule.prepare_data()
        datamodule.setup("fit")
        return load_finetuned(args.checkpoint, args.device).spiking_model(), datamodule
    settings = ConversionConfig.from_group(cfg.conversion)
    converted = snn_from_checkpoint(args.checkpoint, settings, datamodule, args.device)
    return converted.snn, converted.datamodule


def print_report(console: Console, report: LayerErrorReport, split: str) -> None:
    table = Table(
        title=f"T={report.timesteps}, {report.images} {split} images: SNN "
        f"{100 * report.snn_accuracy:.2f}%, rate reference {100 * report.reference_accuracy:.2f}%"
    )
    for column in ("layer", "rate", "off (%)", "excess spikes", "local err (%)", "drift (%)"):
        table.add_column(column, justify="right")
    for layer in report.layers:
        table.add_row(
            layer.name,
            f"{layer.rate:.3f}",
            f"{100 * layer.off_fraction:.1f}",
            f"{layer.excess_spikes:+.3f}",
            f"{100 * layer.local_error:.1f}",
            f"{100 * layer.drift:.1f}",
        )
    console.print(table)


def plot_report(path: Path, report: LayerErrorReport, title: str) -> Path:
    fig = Figure(figsize=(max(6.0, 0.4 * len(report.layers)), 4.0))
    ax = fig.add_subplot()
    x = range(len(report.layers))
    ax.bar([i - 0.2 for i in x], [100 * la.local_error for la in report.layers], 0.4,
           label="own error (%)")  # fmt: skip
    ax.bar([i + 0.2 for i in x], [100 * la.drift for la in report.layers], 0.4,
           label="accumulated drift (%)")  # fmt: skip
    ax.set_xticks(list(x), [la.name for la in report.layers], rotation=70, fontsize=7)
    ax.set_ylabel("relative to the rate reference (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: conversion.*, data.*")
    parser.add_argument("--timesteps", type=positive, default=4)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--num-images", type=count, default=0, help="at most this many (0 = all)")
    parser.add_argument("--out", type=Path, help="output folder (default: beside the checkpoint)")
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), gpu, cuda:N or cpu"
    )
    args = parser.parse_intermixed_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist.")
    args.device = resolve_device(args.device)
    out_dir = args.out or args.checkpoint.parent
    snn, datamodule = spiking_model(args, out_dir)
    loader = datamodule.test_dataloader() if args.split == "test" else datamodule.val_dataloader()
    report = layer_errors(snn, loader, args.timesteps, args.num_images or None)
    console = Console()
    print_report(console, report, args.split)
    prefix = out_dir / f"{args.checkpoint.name}.layers_T{args.timesteps}"
    record = {"checkpoint": str(args.checkpoint), "split": args.split, **asdict(report)}
    title = (
        f"{args.checkpoint.name}, T={args.timesteps}, {report.images} {args.split} images: SNN "
        f"{100 * report.snn_accuracy:.2f}%, rate reference {100 * report.reference_accuracy:.2f}%"
    )
    paths = [
        atomic_write_text(Path(f"{prefix}.json"), json.dumps(record, indent=1) + "\n"),
        plot_report(Path(f"{prefix}.png"), report, title),
    ]
    console.print("Wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    run_cli(main)
