"""Run a NIR file on CIFAR-10 test images; with its checkpoint, prove it equals the native SNN.

    python scripts/verify_nir.py FILE.nir [--timesteps 1 4 8] [--num-images N]
    python scripts/verify_nir.py logs/.../checkpoints/last.nir --checkpoint logs/.../last.ckpt
    python scripts/verify_nir.py FILE.nir --checkpoint CKPT conversion.correction.timesteps=0
    python scripts/verify_nir.py logs/.../checkpoints/finetune/last.nir \
        --checkpoint logs/.../checkpoints/finetune/last.ckpt

Errors (a malformed file, bad metadata) print one line; ``--debug`` shows the traceback.

Prints the graph's accuracy per T. With ``--checkpoint`` the checkpoint is converted again
(conversion settings from the file's metadata, ``conversion.*`` overrides replacing some;
calibration reads the fixed, un-augmented calibration images, so it gives the same thresholds and
membranes) and the native SNN's accuracy, the max abs diff and the number of divergent images are
printed too. A fine-tuning checkpoint (``finetune=snn``) holds the spiking network itself: it is
loaded as trained, not converted, and ``conversion.*`` overrides are refused. Test images come from
the configured data source (``data.*`` overrides).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from neurocuda.checkpoint import (
    refuse_conversion_overrides,
    settings_with_overrides,
    snn_from_checkpoint,
)
from neurocuda.cli import count, positive, run_cli
from neurocuda.conversion import ConversionConfig, ConversionError
from neurocuda.data import CheckpointDataError, CIFAR10DataModule, datamodule_from_checkpoint
from neurocuda.devices import resolve_device
from neurocuda.nir import Executor, load
from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.metadata import check_timesteps
from neurocuda.nir.verify import RoundTripReport, compare
from neurocuda.progress import progress
from neurocuda.snn import SpikingModel
from neurocuda.training.checkpoints import is_finetune_checkpoint
from neurocuda.training.compose import compose_train_config
from neurocuda.training.settings import validate_run_settings
from neurocuda.training.snn_finetune import load_finetuned


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="the .nir file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: conversion.*, data.*")
    parser.add_argument(
        "--checkpoint", type=Path, help="Lightning checkpoint of the ANN or of SNN fine-tuning"
    )
    parser.add_argument("--timesteps", type=int, nargs="+", help="T values (default: metadata)")
    parser.add_argument(
        "--num-images",
        type=count,
        default=None,
        help="test images (0 = all; default: data.test_subset when given, else 1000)",
    )
    parser.add_argument("--batch-size", type=positive, default=100)
    parser.add_argument("--archive", type=Path, help="JPEG archive (default: data.archive)")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when there is one), gpu, cuda:N or cpu; a --checkpoint's ANN is "
        "converted there: a file converted on a GPU re-converts exactly on a GPU, not the CPU",
    )
    args = parser.parse_intermixed_args(argv)
    args.device = resolve_device(args.device)
    return args


def test_data(args: argparse.Namespace, cfg: DictConfig) -> CIFAR10DataModule:
    """The configured data source's test split (``--num-images`` of it), un-augmented."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    images = args.num_images if args.num_images is not None else data.get("test_subset") or 1000
    data |= {"val_size": 0, "test_subset": images or None}  # only test images are read
    data |= {"batch_size": args.batch_size, "eval_batch_size": None, "augment": False}
    if args.archive:
        data["archive"] = str(args.archive)
    dm = hydra.utils.instantiate(data)
    dm.prepare_data()
    dm.setup("test")
    return dm


def native_model(args: argparse.Namespace, settings: ConversionConfig) -> SpikingModel:
    """The checkpoint's spiking network: a fine-tuned one as trained; an ANN converted again on
    its own calibration images (its data settings: batch size, validation split, seed), so
    thresholds and membranes equal the training-time ones whatever ``--batch-size`` the test
    images run with."""
    if is_finetune_checkpoint(args.checkpoint):
        refuse_conversion_overrides(args.checkpoint, args.overrides)
        return load_finetuned(args.checkpoint, args.device).spiking_model()
    archive = {"archive": str(args.archive)} if args.archive else {}
    datamodule = datamodule_from_checkpoint(args.checkpoint, **archive)
    # converted on --device: a conversion's float operations differ between devices, so a file
    # written on a GPU re-converts exactly on a GPU (the same model), not on the CPU
    return snn_from_checkpoint(args.checkpoint, settings, datamodule, args.device).snn


def print_report(console: Console, report: RoundTripReport, with_native: bool) -> None:
    table = Table(title=f"{report.images} test images")
    columns = ["T", "NIR acc (%)"]
    if with_native:
        columns += ["native acc (%)", "max abs diff", "divergent images"]
    for column in columns:
        table.add_column(column, justify="right")
    nir_acc, native_acc = report.accuracy("nir"), report.accuracy("native")
    for t in sorted(nir_acc):
        row = [str(t), f"{100 * nir_acc[t]:.2f}"]
        if with_native:
            row += [
                f"{100 * native_acc[t]:.2f}",
                f"{report.max_abs_diff[t]:g}",
                str(report.divergent_images[t]),
            ]
        table.add_row(*row)
    console.print(table)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console = Console()
    graph = load(args.file)
    cfg = compose_train_config(args.overrides, args.file.parent)  # writes nothing: no new folder
    validate_run_settings(cfg)  # e.g. data.batch_size=0, before the data loads
    try:
        recorded = ConversionConfig.from_metadata(graph.metadata)
    except ConversionError as error:
        raise NIRFormatError(f"{args.file}: its metadata is invalid: {error}") from error
    settings = settings_with_overrides(recorded, cfg, args.overrides)
    if args.timesteps:
        timesteps = check_timesteps(args.timesteps, "--timesteps")
    else:
        timesteps = list(settings.timesteps)
    dm = test_data(args, cfg)
    try:
        snn = native_model(args, settings) if args.checkpoint else None
    except CheckpointDataError as error:
        raise SystemExit(str(error)) from error
    executor = Executor(graph).to(args.device)
    loader = dm.test_dataloader()
    with progress("verifying", len(loader.dataset)) as advance:  # lines in a log, a bar on a tty
        report = compare(executor, snn, loader, timesteps, settings.encoding, on_batch=advance)
    print_report(console, report, snn is not None)
    if snn is not None:
        exact = report.worst_diff == 0.0 and report.total_divergent == 0
        console.print("round trip exact" if exact else "[red]round trip NOT exact[/red]")
        return 0 if exact else 1
    return 0


if __name__ == "__main__":
    run_cli(main)
