"""Train a CPU recipe on the full CIFAR-10 archive and report test accuracy, minutes and images/s.

    python scripts/benchmark_training.py            # full: experiment=cifarnet_cpu
    python scripts/benchmark_training.py --experiment resnet20_cpu
    python scripts/benchmark_training.py --quick    # 5,000 images, 2 epochs
    python scripts/benchmark_training.py -- trainer.max_epochs=8   # extra train.py overrides

Runs ``train.py`` as a subprocess (exactly what a user runs) with SNN conversion switched off, so
the timing is of ANN training alone, then reads the CSV logger's metrics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from neurocuda.reporting.sweep_summary import csv_metrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="cifarnet_cpu", help="configs/experiment recipe")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 2 epochs")
    parser.add_argument("--run-dir", type=Path, default=None, help="where train.py writes")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args()
    conversion = [o for o in args.overrides if o.lstrip("+~").startswith("conversion")]
    if conversion:  # Hydra's own message ("Key 'conversion' is not in struct") names no fix
        parser.error(
            f"{' '.join(conversion)}: this benchmark times the ANN fit alone, with the conversion "
            "group off; drop conversion.* here and convert the checkpoint afterwards "
            "(python scripts/convert.py CKPT conversion.v_init=...)."
        )

    run_dir = args.run_dir or ROOT / "logs" / "benchmarks" / time.strftime("training_%Y%m%d_%H%M%S")
    overrides = [f"experiment={args.experiment}", "~conversion", f"hydra.run.dir={run_dir}"]
    if args.quick:
        overrides += ["data.train_subset=5000", "data.test_subset=2000", "trainer.max_epochs=2"]
    overrides += args.overrides
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], check=True, cwd=ROOT)
    minutes = (time.perf_counter() - start) / 60

    metrics = csv_metrics(run_dir)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    epochs = cfg.trainer.max_epochs
    train_images = cfg.data.train_subset or 50_000 - cfg.data.val_size
    batch = cfg.data.batch_size
    if train_images > batch:  # the training loader drops its last, partial batch
        train_images -= train_images % batch
    table = Table(title=f"{args.experiment} training (" + ("quick" if args.quick else "full") + ")")
    for column in (
        "test acc",
        "epochs",
        "minutes (wall, incl. test)",
        "images/s (epochs x images / wall)",
    ):
        table.add_column(column)
    table.add_row(
        f"{metrics.get('test/acc', float('nan')):.4f}",
        str(epochs),
        f"{minutes:.2f}",
        f"{epochs * train_images / (minutes * 60):.0f}",
    )
    Console().print(table)
    Console().print(f"run dir: {run_dir}\noverrides: {' '.join(overrides)}")


if __name__ == "__main__":
    main()
