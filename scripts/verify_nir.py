"""Run a NIR file on CIFAR-10 test images; with its checkpoint, prove it equals the native SNN.

    python scripts/verify_nir.py FILE.nir [--timesteps 1 4 8] [--num-images N]
    python scripts/verify_nir.py logs/.../checkpoints/last.nir --checkpoint logs/.../last.ckpt

Errors (a malformed file, bad metadata) print one line; ``--debug`` shows the traceback.

Prints the graph's accuracy per T. With ``--checkpoint`` the checkpoint is converted again
(conversion settings from the file's metadata unless given here; calibration reads the fixed,
un-augmented calibration images, so it gives the same thresholds and membranes) and the native
SNN's accuracy, the max abs diff and the number of divergent images are printed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader

from neurocuda.cli import run_cli
from neurocuda.conversion import ConversionConfig, convert
from neurocuda.data import CheckpointDataError, CIFAR10DataModule, datamodule_from_checkpoint
from neurocuda.nir import Executor, load
from neurocuda.nir.metadata import check_timesteps, recorded_timesteps
from neurocuda.nir.verify import RoundTripReport, compare
from neurocuda.training import ClassifierModule

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="the .nir file")
    parser.add_argument("--checkpoint", type=Path, help="Lightning checkpoint of the ANN")
    parser.add_argument("--timesteps", type=int, nargs="+", help="T values (default: metadata)")
    parser.add_argument("--num-images", type=int, default=1000, help="test images (0 = all)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--encoding", choices=["direct", "poisson"], help="default: metadata")
    parser.add_argument("--archive", type=Path, help=f"JPEG archive (default {DEFAULT_ARCHIVE})")
    parser.add_argument("--root", default="data", help="torchvision CIFAR-10 folder")
    parser.add_argument("--reset", choices=["subtract", "zero"], help="default: metadata")
    parser.add_argument("--v-init", type=float, help="fraction of theta (default: metadata)")
    parser.add_argument("--calibration-batches", type=int, help="default: metadata or 8")
    parser.add_argument("--percentile", type=float, help="default: metadata or 99.9")
    parser.add_argument("--per-channel", choices=["true", "false"], help="default: metadata")
    parser.add_argument("--correction-timesteps", type=int, help="0 = off (default: metadata)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def setting(cli: object, metadata: dict, key: str, default: object) -> object:
    """CLI value, else the file's recorded value, else ``default``."""
    if cli is not None:
        return cli
    value = metadata.get(key, default)
    return value.item() if hasattr(value, "item") else value


def datamodule(args: argparse.Namespace) -> CIFAR10DataModule:
    archive = args.archive or (DEFAULT_ARCHIVE if DEFAULT_ARCHIVE.is_file() else None)
    dm = CIFAR10DataModule(
        archive=str(archive) if archive else None,
        root=args.root,
        val_size=0,  # only the test split is read here
        test_subset=args.num_images or None,
        batch_size=args.batch_size,
        augment=False,
    )
    dm.prepare_data()
    dm.setup("test")
    return dm


def calibration_data(args: argparse.Namespace) -> DataLoader:
    """The checkpoint's own training data settings (batch size, validation split, seed): the
    calibration images, and so the thresholds and membranes, then equal the conversion's at
    training time, whatever ``--batch-size`` the test images are run with."""
    try:
        dm = datamodule_from_checkpoint(
            args.checkpoint, **({"archive": str(args.archive)} if args.archive else {})
        )
    except CheckpointDataError as error:
        raise SystemExit(str(error)) from error
    dm.prepare_data()
    dm.setup("fit")
    return dm.calibration_dataloader()


def native_model(args: argparse.Namespace, metadata: dict):
    module = ClassifierModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    config = ConversionConfig.from_metadata(
        metadata,
        calibration_batches=args.calibration_batches,
        percentile=args.percentile,
        per_channel=args.per_channel,
        reset=args.reset,
        v_init=args.v_init,
        correction_timesteps=args.correction_timesteps,
    )
    return convert(module.net.eval(), calibration_data(args), config).to(args.device)


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
    metadata = dict(graph.metadata)
    if args.timesteps:
        timesteps = check_timesteps(args.timesteps, "--timesteps")
    else:
        timesteps = recorded_timesteps(metadata)
    encoding = str(setting(args.encoding, metadata, "encoding", "direct"))
    dm = datamodule(args)
    snn = native_model(args, metadata) if args.checkpoint else None
    executor = Executor(graph).to(args.device)
    loader = dm.test_dataloader()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("verifying", total=len(loader.dataset))
        report = compare(
            executor, snn, loader, timesteps, encoding,
            on_batch=lambda n: progress.advance(task, n),
        )  # fmt: skip
    print_report(console, report, snn is not None)
    if snn is not None:
        exact = report.worst_diff == 0.0 and report.total_divergent == 0
        console.print("round trip exact" if exact else "[red]round trip NOT exact[/red]")
        return 0 if exact else 1
    return 0


if __name__ == "__main__":
    run_cli(main)
