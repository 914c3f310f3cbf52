"""Benchmark ANN -> SNN conversion: ANN accuracy and SNN accuracy at T = 1..32, relu and qcfs.

    python scripts/benchmark_conversion.py                     # trains with experiment=cifarnet_cpu
    python scripts/benchmark_conversion.py --relu-ckpt A.ckpt --qcfs-ckpt B.ckpt   # either or both
    python scripts/benchmark_conversion.py --quick             # ~minutes: small net, data subset

Trains through train.py's own ``train`` (Hydra config), converts with several choices (thresholds
per layer / per channel, initial membrane 0 / theta/2, soft / hard reset, initial-membrane
correction off / at T=4 / at T=8) and evaluates each on the test set (or a subset), printing a
table and writing it as JSON into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurocuda.checkpoint import snn_from_checkpoint  # noqa: E402
from neurocuda.conversion import ConversionConfig, evaluate_snn  # noqa: E402
from neurocuda.data import datamodule_from_checkpoint  # noqa: E402
from neurocuda.training.compose import compose_train_config  # noqa: E402
from train import train  # noqa: E402

TIMESTEPS = [1, 2, 4, 8, 16, 32]
OFF = {"correction_timesteps": 0}
VARIANTS = {
    "relu": [
        ("layer, v0=theta/2", {"per_channel": False, **OFF}),
        ("channel, v0=theta/2", {"per_channel": True, **OFF}),
        ("channel, v0=0", {"per_channel": True, "v_init": 0.0, **OFF}),
        ("channel, hard reset", {"per_channel": True, "reset": "zero", **OFF}),
        ("channel, corrected at T=4 (default)", {"per_channel": True}),
        ("channel, corrected at T=8", {"per_channel": True, "correction_timesteps": 8}),
    ],
    "qcfs": [
        ("learned, v0=theta/2", {**OFF}),
        ("learned, corrected at T=4 (default)", {}),
        ("learned, corrected at T=8", {"correction_timesteps": 8}),
    ],
}


def train_checkpoint(activation: str, out: Path, quick: bool, extra: list[str]) -> Path:
    """Train cifarnet with ``activation`` through train.py; return its last checkpoint."""
    run = out / f"train_{activation}"
    overrides = ["experiment=cifarnet_cpu", f"model.activation={activation}", "~conversion",
                 "test=false", "logger=csv", "~callbacks.rich_progress_bar"]  # fmt: skip
    if quick:
        overrides += ["data=cifar10_subset", "data.train_subset=2000", "data.val_subset=200",
                      "trainer.max_epochs=2",
                      "+model.arch_kwargs.widths=[16,32,32,64]"]  # fmt: skip
    cfg = compose_train_config([*overrides, *extra], run)
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


def benchmark(ckpt: Path, activation: str, images: int, device: str) -> list[dict]:
    datamodule = datamodule_from_checkpoint(ckpt)
    rows = []
    for name, options in VARIANTS[activation]:
        start = time.perf_counter()
        settings = ConversionConfig(**options)
        converted = snn_from_checkpoint(ckpt, settings, datamodule, device)
        ev = evaluate_snn(converted.snn, datamodule.test_dataloader(), TIMESTEPS,
                          ann=converted.ann, max_images=images)  # fmt: skip
        rows.append({"activation": activation, "variant": name, "ann": ev.ann_accuracy,
                     "snn": ev.accuracy, "images": ev.images, "synops": ev.synops_per_image,
                     "seconds": time.perf_counter() - start, "checkpoint": str(ckpt)})  # fmt: skip
    return rows


def print_rows(rows: list[dict]) -> None:
    table = Table(title="ANN vs SNN accuracy (%) per T; gap = ANN - SNN (pp)")
    for col in ("model", "conversion", "ANN", *(f"T={t}" for t in TIMESTEPS)):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [
            f"{100 * r['snn'][t]:.2f} ({100 * (r['ann'] - r['snn'][t]):+.2f})" for t in TIMESTEPS
        ]
        table.add_row(r["activation"], r["variant"], f"{100 * r['ann']:.2f}", *cells)
    Console(width=200).print(table)  # full width also when logged to a file


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--relu-ckpt", type=Path)
    parser.add_argument("--qcfs-ckpt", type=Path)
    parser.add_argument("--quick", action="store_true", help="small net, data subset, 2 epochs")
    parser.add_argument("--images", type=int, help="test images (default: all; --quick: 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmark_conversion")
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), gpu, cuda:N or cpu"
    )
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides when training")
    args = parser.parse_args()
    images = args.images or (500 if args.quick else None)
    rows = []
    given = {"relu": args.relu_ckpt, "qcfs": args.qcfs_ckpt}
    train_both = not any(given.values())  # with one checkpoint given, only that one is measured
    for activation, ckpt in given.items():
        if ckpt is None and not train_both:
            continue
        ckpt = ckpt or train_checkpoint(activation, args.out, args.quick, args.overrides)
        rows += benchmark(ckpt, activation, images, args.device)
        print_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    Console().print(f"Wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
