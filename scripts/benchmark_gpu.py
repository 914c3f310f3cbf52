"""ResNet-18 on one GPU, end to end: training speed and time to accuracy, the SNN on the full test
set, its NIR round trip and the Loihi 2 simulator's speed. One table, one JSON file.

    python scripts/benchmark_gpu.py                       # one GPU, about 8 minutes (H200)
    python scripts/benchmark_gpu.py --epochs 40 --finetune-epochs 2
    python scripts/benchmark_gpu.py --quick               # CPU, tiny settings, under a minute
    python scripts/benchmark_gpu.py --quick data.archive=PATH   # extra train.py overrides
    python scripts/benchmark_gpu.py --smoke               # the GPU, tiny settings: a fault check

1. ``train.py experiment=resnet18_cifar10_qcfs`` (a subprocess, as a user runs it) for
   ``--epochs`` epochs (ANN with QCFS activations; conversion and NIR export at the last epoch;
   ``--finetune-epochs`` of SNN fine-tuning at T=4 on ``--finetune-batches`` batches), with
   :class:`callbacks.throughput.TrainingThroughput`: training images/s, minutes of the fit, ANN
   test accuracy and the run's SNN test accuracy per T (fine-tuned when fine-tuning ran).
2. The best ANN checkpoint converted (:func:`neurocuda.checkpoint.snn_from_checkpoint`) and
   evaluated at T = 4, 8, 16 on every test image (:func:`neurocuda.conversion.evaluate_snn`).
3. Its NIR graph exported, read back and re-executed on the same images
   (:func:`neurocuda.nir.verify.compare`): max abs diff and divergent images.
4. That ``.nir`` file deployed on the Loihi 2 simulator (:func:`neurocuda.deploy.run_deployment`)
   on ``--loihi-images`` test images: accuracy and images/s.

Writes ``<out>/benchmark_gpu.json`` (and the run directory ``<out>/run``). ``--quick`` runs on the
CPU with ResNet-20, one short epoch and small test subsets: it checks the path, not the figures.
``--smoke`` runs the same tiny sizes (whatever sizes are asked) on the default device with the
experiment's own model: ``scripts/gpu_session.sh`` runs it first, so a fault that only the GPU
shows costs a minute of the loan instead of the whole run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurocuda.checkpoint import checkpoint_datamodule, export_snn, snn_from_checkpoint  # noqa: E402
from neurocuda.conversion import ConversionConfig, evaluate_snn  # noqa: E402
from neurocuda.data.calibration import calibration_loader  # noqa: E402
from neurocuda.deploy import run_deployment  # noqa: E402
from neurocuda.deploy.loihi2.backend import Loihi2Backend  # noqa: E402
from neurocuda.devices import resolve_device, synchronize  # noqa: E402
from neurocuda.files import atomic_write_text  # noqa: E402
from neurocuda.nir import Executor, load, save  # noqa: E402
from neurocuda.nir.verify import compare  # noqa: E402
from neurocuda.reporting.sweep_summary import csv_metrics  # noqa: E402
from neurocuda.training.compose import compose_train_config  # noqa: E402

TIMESTEPS = (4, 8, 16)
FINETUNE_T = 4
CPU_OVERRIDES = ["trainer.accelerator=cpu", "model.arch=resnet20"]  # --quick only
TINY_OVERRIDES = [  # --quick and --smoke
    "data.train_subset=256",
    "data.val_subset=64",
    "data.test_subset=64",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "+trainer.limit_train_batches=3",
    "+trainer.enable_model_summary=false",
    "finetune.train_batches=2",
    "finetune.callbacks.nir_round_trip.num_images=4",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CPU, ResNet-20, tiny data")
    parser.add_argument(
        "--smoke", action="store_true", help="default device, the experiment's model, tiny data"
    )
    parser.add_argument("--experiment", default="resnet18_cifar10_qcfs")
    parser.add_argument("--epochs", type=int, help="ANN epochs (default 30; --quick 1)")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="SNN epochs at T=4; 0: none")
    parser.add_argument(
        "--finetune-batches", type=int, default=50, help="training batches per fine-tuning epoch"
    )
    parser.add_argument("--loihi-images", type=int, help="test images on loihi2 (default 1000)")
    parser.add_argument("--loihi-timesteps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmark_gpu")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (data.*, ...)")
    args = parser.parse_intermixed_args(argv)
    if args.quick and args.smoke:
        parser.error("--quick (CPU) and --smoke (default device) exclude each other.")
    if args.smoke:  # the tiny sizes, whatever the session's long run asks for
        args.epochs, args.finetune_batches, args.loihi_images = 1, 2, 8
        args.finetune_epochs = min(args.finetune_epochs, 1)
    args.epochs = args.epochs or (1 if args.quick else 30)
    args.loihi_images = args.loihi_images or (8 if args.quick else 1000)
    if min(args.epochs, args.loihi_images, args.finetune_batches) < 1 or args.finetune_epochs < 0:
        parser.error(
            "--epochs, --loihi-images and --finetune-batches must be >= 1, --finetune-epochs >= 0."
        )
    return args


def train_overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``train.py`` command line of step 1."""
    overrides = [
        f"experiment={args.experiment}",
        f"trainer.max_epochs={args.epochs}",
        f"conversion.every_n_epochs={args.epochs}",
        f"conversion.timesteps=[{','.join(map(str, TIMESTEPS))}]",
        "logger=csv",
        "+callbacks.throughput._target_=callbacks.throughput.TrainingThroughput",
        f"hydra.run.dir={run_dir}",
    ]
    if args.finetune_epochs:
        overrides += [
            "finetune=snn",
            f"finetune.epochs={args.finetune_epochs}",
            f"finetune.timesteps={FINETUNE_T}",
            f"finetune.train_batches={args.finetune_batches}",
        ]
    if args.quick or args.smoke:
        tiny = CPU_OVERRIDES * args.quick + TINY_OVERRIDES
        overrides += [o for o in tiny if args.finetune_epochs or "finetune" not in o]
    return overrides + list(args.overrides)


def best_checkpoint(run_dir: Path) -> Path:
    """The best-validation ANN checkpoint (``epoch_NNN.ckpt``), else ``last.ckpt``."""
    best = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    return best[-1] if best else run_dir / "checkpoints" / "last.ckpt"


def timed(device: torch.device, function, *args, **kwargs):
    """``function(*args, **kwargs)`` and its wall seconds (``device`` synchronised)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize(device)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out.resolve()
    run_dir = out / "run"
    overrides = train_overrides(args, run_dir)
    console = Console()
    console.print("[bold]1/4 training:[/] train.py " + " ".join(overrides))
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], check=True, cwd=ROOT)
    run_minutes = (time.perf_counter() - start) / 60
    metrics = csv_metrics(run_dir)

    cfg = compose_train_config(overrides, run_dir)
    device = resolve_device("cpu" if args.quick else "auto")
    settings = ConversionConfig.from_group(cfg.conversion)
    ckpt = best_checkpoint(run_dir)
    datamodule = checkpoint_datamodule(ckpt, cfg, overrides)
    console.print(f"[bold]2/4 SNN evaluation[/] of {ckpt.name} on {device}")
    converted = snn_from_checkpoint(ckpt, settings, datamodule, device)
    test = datamodule.test_dataloader()
    evaluation, eval_s = timed(
        device, evaluate_snn, converted.snn, test, TIMESTEPS, ann=converted.ann,
        encoding=settings.encoding, progress=False,
    )  # fmt: skip

    console.print("[bold]3/4 NIR round trip[/] on the same images")
    sample = next(iter(test))[0]
    graph = export_snn(converted.snn, settings, sample, checkpoint=ckpt.name)
    nir_path = save(graph, out / f"{ckpt.stem}.nir")
    executor = Executor(load(nir_path)).to(device)
    round_trip, nir_s = timed(
        device, compare, executor, converted.snn, test, TIMESTEPS, settings.encoding
    )

    console.print(f"[bold]4/4 Loihi 2 simulator[/] on {args.loihi_images} images")
    (report, report_paths), _ = timed(
        device, run_deployment, nir_path, Loihi2Backend(device=str(device)), test,
        args.loihi_timesteps, out / "deploy", args.loihi_images, progress=False,
        source=str(nir_path), calibration=calibration_loader(datamodule),
    )  # fmt: skip

    resources = report.target_info.get("resources", {})
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "quick": args.quick,
        "smoke": args.smoke,
        "command": "python scripts/benchmark_gpu.py " + " ".join(argv or sys.argv[1:]),
        "train_overrides": overrides,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "train_images_per_s": metrics.get("perf/train_images_per_s"),
        "fit_minutes": metrics.get("perf/fit_minutes"),
        "train_py_minutes": run_minutes,
        "ann_test_acc": metrics.get("test/acc"),
        "run_snn_test_acc": {
            t: metrics[f"test/snn_acc_T{t}"] for t in TIMESTEPS if f"test/snn_acc_T{t}" in metrics
        },
        "run_snn_is_finetuned": bool(args.finetune_epochs),
        "checkpoint": str(ckpt),
        "test_images": evaluation.images,
        "converted_ann_acc": evaluation.ann_accuracy,
        "converted_snn_acc": evaluation.accuracy,
        "snn_eval_seconds": eval_s,
        "snn_eval_images_per_s": evaluation.images / eval_s,
        "nir_file": str(nir_path),
        "nir_max_abs_diff": round_trip.worst_diff,
        "nir_divergent_images": round_trip.total_divergent,
        "nir_images": round_trip.images,
        "nir_seconds": nir_s,
        "loihi2_timesteps": args.loihi_timesteps,
        "loihi2_images": report.images,
        "loihi2_acc": report.accuracy,
        "loihi2_images_per_s": report.throughput_images_per_s,
        "loihi2_cores": resources.get("cores"),
        "loihi2_chips": resources.get("chips"),
        "loihi2_report": str(report_paths["json"]),
    }
    print_table(console, result)
    path = atomic_write_text(out / "benchmark_gpu.json", json.dumps(result, indent=2) + "\n")
    console.print(f"Wrote {path}")
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_table(console: Console, r: dict) -> None:
    check = (
        " (--quick: path check, not figures)" * r["quick"] + " (--smoke: fault check)" * r["smoke"]
    )
    title = f"benchmark_gpu on {r['device']}{check}"
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rate = r["train_images_per_s"]
    rows = [
        ("train", "images/s (training steps)", "-" if rate is None else f"{rate:,.0f}"),
        ("train", f"fit minutes ({r['epochs']} epochs)", f"{r['fit_minutes'] or 0:.2f}"),
        ("train", "train.py minutes (all stages)", f"{r['train_py_minutes']:.2f}"),
        ("train", "ANN test accuracy", _pct(r["ann_test_acc"])),
    ]
    label = "fine-tuned SNN" if r["run_snn_is_finetuned"] else "SNN"
    rows += [("train", f"{label} test T={t}", _pct(a)) for t, a in r["run_snn_test_acc"].items()]
    rows += [("convert", f"ANN on {r['test_images']} test images", _pct(r["converted_ann_acc"]))]
    rows += [("convert", f"SNN T={t}", _pct(a)) for t, a in r["converted_snn_acc"].items()]
    rows += [
        ("convert", "evaluation images/s (SNN to T=16 + ANN + data + spike counts)",
         f"{r['snn_eval_images_per_s']:,.0f}"),
        ("nir", f"max abs diff on {r['nir_images']} images", f"{r['nir_max_abs_diff']:g}"),
        ("nir", "divergent images", str(r["nir_divergent_images"])),
        ("nir", "round-trip seconds", f"{r['nir_seconds']:.1f}"),
        ("loihi2", f"accuracy T={r['loihi2_timesteps']} ({r['loihi2_images']} images)",
         _pct(r["loihi2_acc"])),
        ("loihi2", "images/s", f"{r['loihi2_images_per_s']:,.1f}"),
        ("loihi2", "cores / chips", f"{r['loihi2_cores']} / {r['loihi2_chips']}"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
