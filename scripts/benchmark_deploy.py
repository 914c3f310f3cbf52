"""Deployment benchmarks: float SNN vs loihi2 accuracy, simulator vs Lava speed, resources, energy.

    python scripts/benchmark_deploy.py --nir CIFARNET.nir              # full test set, T=8,32
    python scripts/benchmark_deploy.py --checkpoint last.ckpt --quick  # 500 images, short
    python scripts/benchmark_deploy.py --quick --skip-accuracy         # speed + resources only
    python scripts/benchmark_deploy.py --checkpoint last.ckpt --images 1000 --timesteps 8 32
    python scripts/benchmark_deploy.py --checkpoint last.ckpt --sections ratio profile \
        --images 256 --timesteps 8 32
    python scripts/benchmark_deploy.py --nir FILE.nir --sections accuracy --split val \
        --timesteps 4 8 experiment=resnet20_qcfs_cpu  # validation split of that experiment

Sections (``--sections``; each printed and saved in ``--out`` as JSON):

1. accuracy: the trained graph (``--nir``, or ``--checkpoint`` converted and exported here) on the
   test set (``--split val``: the validation split) at each T: float SNN (NIR executor) vs the
   loihi2 simulator, calibrated on training images as deployments are.
2. speed: images/s of our simulator in ``lava`` mode vs lava-nc itself (its venv, see
   scripts/install_lava.sh) on the same integer conv net; Lava's time is its ``run`` only
   (compilation excluded), one image per run as Lava processes one sample.
3. mapping and energy of cifarnet and resnet18 (structure from a converted model; energy counts
   from a run on test images: meaningful for trained graphs only, marked otherwise).
4. ratio: loihi2 simulator images/s over the float SNN's (NIR executor) on the same test images
   at each T, measured in one process, interleaved (float, loihi2, float, loihi2, ...): the median
   of the per-round ratios, so that a machine whose speed drifts between runs still compares them.
5. profile: ``torch.profiler`` of one loihi2 run (first T, ``--images``): time per phase
   (matrix products, state updates, saturation counting, recording, Python overhead) and per layer.

Without ``--nir``/``--checkpoint`` the ratio and profile sections use a random-init CifarNet
(32, 48, 96, 192) converted with thresholds calibrated on one test batch.
Data come from the project's Hydra configs (trailing overrides, e.g. ``data=cifar10``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurocuda.data.calibration import calibration_loader  # noqa: E402
from neurocuda.deploy import deploy  # noqa: E402
from neurocuda.deploy.evaluate import MAX_SAMPLE_STEPS  # noqa: E402
from neurocuda.deploy.loihi2.backend import Loihi2Backend  # noqa: E402
from neurocuda.deploy.loihi2.network import IntNetwork, Population, Projection, to_json  # noqa: E402
from neurocuda.deploy.loihi2.simulator import simulate  # noqa: E402
from neurocuda.deploy.torch_backend import TorchBackend  # noqa: E402
from neurocuda.files import atomic_write_text  # noqa: E402

LAVA_PYTHON = ROOT / ".cache" / "lava-venv" / "bin" / "python"
SECTIONS = ("accuracy", "speed", "mapping", "ratio", "profile")


def test_loader(overrides: list[str], output_dir: Path, checkpoint: Path | None = None):
    """The data: a ``checkpoint``'s own settings (its validation split and calibration images,
    so its conversion is the run's) with the ``data.*`` overrides, else the overrides' config."""
    import hydra

    from neurocuda.checkpoint import checkpoint_datamodule
    from neurocuda.training.compose import compose_train_config

    cfg = compose_train_config(overrides, output_dir)
    if checkpoint is not None:
        datamodule = checkpoint_datamodule(checkpoint, cfg, overrides)
    else:
        datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def graph_from_checkpoint(path: Path, datamodule):
    from neurocuda.checkpoint import nir_from_checkpoint

    return nir_from_checkpoint(path, datamodule=datamodule)[0]


def calibrated_loihi2(graph, datamodule, device: str) -> Loihi2Backend:
    """The loihi2 target on ``graph``, calibrated as deployments are: 4 batches of training
    images."""
    backend = Loihi2Backend(device=device)
    backend.prepare(graph)
    backend.calibrate(itertools.islice(calibration_loader(datamodule), 4))
    return backend


def accuracy_section(
    graph, datamodule, timesteps, max_images, device, split: str = "test"
) -> list[dict]:
    rows = []
    batches = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    for t in timesteps:
        row = {"T": t, "split": split}
        for target in ("float", "loihi2"):
            if target == "float":
                backend = TorchBackend(device)
                backend.prepare(graph)
            else:
                backend = calibrated_loihi2(graph, datamodule, device)
            report = deploy(backend, batches, t, max_images=max_images)
            row[f"{target}_acc"] = report.accuracy
            row[f"{target}_images_per_s"] = report.throughput_images_per_s
            row["images"] = report.images
            if target == "loihi2":
                row["saturation"] = report.saturation
                row["energy_uj_loihi"] = report.energy["loihi_uj"]
                row["energy_uj_ann_fp32"] = report.energy["ann_fp32_uj"]
                row["cores"] = report.target_info["resources"]["cores"]
        row["gap"] = row["float_acc"] - row["loihi2_acc"]
        rows.append(row)
        print(json.dumps(row))
    return rows


def speed_net(g: torch.Generator) -> IntNetwork:
    """Graded 3x16x16 input -> conv 8x8x8 -> conv 16x4x4 -> dense 10: Lava runs it in seconds."""

    def pop(name, shape):
        z = torch.zeros(shape, dtype=torch.int64)
        return Population(name, tuple(shape), torch.tensor(40), z, z, z)

    return IntNetwork(
        inputs={"x": (3, 16, 16)},
        populations=[pop("a", [8, 8, 8]), pop("b", [16, 4, 4]), pop("c", [10])],
        projections=[
            Projection(
                "x",
                "a",
                "conv",
                torch.randint(-60, 60, (8, 3, 3, 3), generator=g),
                stride=(2, 2),
                padding=(1, 1),
                graded=True,
            ),
            Projection(
                "a",
                "b",
                "conv",
                torch.randint(-128, 128, (16, 8, 3, 3), generator=g),
                stride=(2, 2),
                padding=(1, 1),
            ),
            Projection("b", "c", "dense", torch.randint(-256, 255, (10, 256), generator=g)),
        ],
        output="c",
    )


def speed_section(steps: int, lava_images: int, batch: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    net = speed_net(g)
    x = torch.randint(-127, 128, (batch, 3, 16, 16), generator=g)
    simulate(net, {"x": x[:2].to(device)}, 2, "lava")  # warm-up
    start = time.perf_counter()
    simulate(net, {"x": x.to(device)}, steps, "lava")
    ours = batch / (time.perf_counter() - start)
    result = {"steps": steps, "ours_images_per_s": ours, "batch": batch, "device": device}
    if not LAVA_PYTHON.is_file():
        result["lava"] = "not installed: bash scripts/install_lava.sh"
        return result
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(lava_images):
            spec = json.loads(to_json(net))
            spec["steps"] = steps
            spec["input_data"] = {"x": [x[i].tolist()] * steps}
            Path(tmp, "s.json").write_text(json.dumps(spec))
            cmd = [str(LAVA_PYTHON), str(ROOT / "scripts/lava_reference.py"),
                   f"{tmp}/s.json", f"{tmp}/r.json"]  # fmt: skip
            subprocess.run(
                cmd, check=True, timeout=600, capture_output=True, start_new_session=True
            )
            seconds.append(json.loads(Path(tmp, "r.json").read_text())["seconds"])
    result["lava_images_per_s"] = len(seconds) / sum(seconds)
    result["speedup"] = ours / result["lava_images_per_s"]
    return result


def untrained_graph(arch: str, x: torch.Tensor, **arch_kwargs):
    """``arch`` with random weights, converted with thresholds calibrated on ``x``, exported."""
    from neurocuda.conversion import ConversionConfig, convert
    from neurocuda.models import build_model
    from neurocuda.nir import export

    torch.manual_seed(0)
    model = build_model(arch, **arch_kwargs).eval()
    snn = convert(model, [(x, None)], ConversionConfig(calibration_batches=1))
    return export(snn, x[:1])


def test_images(datamodule, images: int) -> torch.Tensor:
    """The first ``images`` test images."""
    parts, have = [], 0
    for x, _ in datamodule.test_dataloader():
        parts.append(x[: images - have])
        have += parts[-1].shape[0]
        if have >= images:
            break
    return torch.cat(parts)


def _backends(graph, datamodule, device: str) -> tuple[TorchBackend, Loihi2Backend]:
    float_backend = TorchBackend(device)
    float_backend.prepare(graph)
    return float_backend, calibrated_loihi2(graph, datamodule, device)


def _run_all(backend, x: torch.Tensor, timesteps: int) -> tuple[float, torch.Tensor]:
    """Seconds to run ``x`` in ``deploy``'s passes (its per-run image limit) and the predictions."""
    predictions, seconds = [], 0.0
    for part in x.split(max(1, MAX_SAMPLE_STEPS // timesteps)):
        start = time.perf_counter()
        out = backend.run(part, timesteps)
        seconds += time.perf_counter() - start
        predictions.append(out.logits.argmax(dim=1))
    return seconds, torch.cat(predictions)


def ratio_section(graph, datamodule, timesteps, images: int, rounds: int, device) -> list[dict]:
    """loihi2 / float images/s at each T, interleaved in one process; median of per-round ratios."""
    float_backend, loihi2 = _backends(graph, datamodule, device)
    x = test_images(datamodule, images)
    rows = []
    for t in timesteps:
        _run_all(float_backend, x[:2], t), _run_all(loihi2, x[:2], t)  # warm-up
        speeds: dict[str, list[float]] = {"float": [], "loihi2": []}
        for _ in range(rounds):
            for name, backend in (("float", float_backend), ("loihi2", loihi2)):
                seconds, predicted = _run_all(backend, x, t)
                speeds[name].append(x.shape[0] / seconds)
                if name == "float":
                    float_predicted = predicted
            agree = float((predicted == float_predicted).float().mean())
        ratios = [b / a for a, b in zip(speeds["float"], speeds["loihi2"], strict=True)]
        row = {
            "T": t,
            "images": x.shape[0],
            "rounds": rounds,
            "float_images_per_s": statistics.median(speeds["float"]),
            "loihi2_images_per_s": statistics.median(speeds["loihi2"]),
            "loihi2_over_float": statistics.median(ratios),
            "ratio_min_max": [min(ratios), max(ratios)],
            "prediction_agreement": agree,
        }
        rows.append(row)
        print(json.dumps(row))
    return rows


def profile_section(graph, datamodule, timesteps: int, images: int, device) -> dict:
    """Where one loihi2 run's time goes: CPU time per phase and per layer (torch.profiler).

    Each aten op's own time is charged to the innermost ``loihi2.*`` label around it (the
    simulator labels its phases and layers); the wall time not spent in any op is Python and
    dispatch overhead.
    """
    from torch.profiler import ProfilerActivity, profile

    _, loihi2 = _backends(graph, datamodule, device)
    x = test_images(datamodule, images)
    loihi2.run(x[:2], timesteps)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        loihi2.run(x, timesteps)
        wall = time.perf_counter() - start
    phases: dict[str, float] = {}
    layers: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith("loihi2."):
            continue
        phase = layer = None
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("loihi2.layer."):
                layer = layer or parent.name.removeprefix("loihi2.layer.")
            elif parent.name.startswith("loihi2.") and phase is None:
                phase = parent.name.removeprefix("loihi2.")
            parent = parent.cpu_parent
        own = event.self_cpu_time_total / 1e6
        key = phase or "other (setup, input encoding)"
        phases[key] = phases.get(key, 0.0) + own
        if layer is not None:
            layers[layer] = layers.get(layer, 0.0) + own
    phases["Python and dispatch overhead"] = wall - sum(phases.values())
    result = {
        "T": timesteps,
        "images": x.shape[0],
        "wall_s": wall,
        "phases_s": phases,
        "layers_s": layers,
    }
    print(f"\nloihi2 simulator, T={timesteps}, {x.shape[0]} images: {wall:.3f} s wall")
    print("| phase | s | share |\n|---|---:|---:|")
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.3f} | {seconds / wall:.1%} |")
    print("\n| layer | s (ops) | per step (ms) | share |\n|---|---:|---:|---:|")
    for name, seconds in layers.items():
        per_step = 1e3 * seconds / timesteps
        print(f"| {name} | {seconds:.3f} | {per_step:.1f} | {seconds / wall:.1%} |")
    return result


def mapping_section(datamodule, images: int, trained: dict) -> list[dict]:
    rows = []
    x = next(iter(datamodule.test_dataloader()))[0]
    for arch in ("cifarnet", "resnet18"):
        graph, note = trained.get(arch, (None, "untrained weights: activity not representative"))
        if graph is None:
            graph = untrained_graph(arch, x)
        backend = calibrated_loihi2(graph, datamodule, "cpu")
        report = deploy(backend, [(x[:images], torch.zeros(images, dtype=torch.long))], 8)
        r = report.target_info["resources"]
        energy = report.energy
        rows.append(
            {
                "arch": arch,
                **{k: r[k] for k in ("cores", "chips", "neurons", "synapses")},
                "synops_per_image": energy["synops"],
                "ann_macs": energy["ann_macs"],
                "loihi_uj": energy["loihi_uj"],
                "ann_fp32_uj": energy["ann_fp32_uj"],
                "note": note,
            }
        )
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--nir", type=Path, help="trained cifarnet graph")
    parser.add_argument("--checkpoint", type=Path, help="trained cifarnet checkpoint")
    parser.add_argument("--quick", action="store_true", help="500 test images, T=8 only")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS[:3]), choices=SECTIONS)
    parser.add_argument("--images", type=int, help="test images (default: all; --quick: 500)")
    parser.add_argument("--timesteps", type=int, nargs="+", help="default: 8 32 (--quick: 8)")
    parser.add_argument("--rounds", type=int, default=5, help="ratio section: interleaved rounds")
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="accuracy section: the images deployed (val: to choose settings; the data "
        "overrides set the split, e.g. experiment=resnet20_qcfs_cpu)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark_deploy.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the data")
    args = parser.parse_args()
    sections = [s for s in args.sections if not (args.skip_accuracy and s == "accuracy")]
    if "accuracy" in sections and args.nir is None and args.checkpoint is None:
        parser.error("give --nir or --checkpoint (or --skip-accuracy)")
    checkpoint = args.checkpoint if args.nir is None else None
    datamodule = test_loader(args.overrides or ["data=cifar10"], args.out.parent, checkpoint)
    results: dict = {}
    trained = {}
    graph = None
    if args.nir is not None or args.checkpoint is not None:
        from neurocuda.nir import load

        graph = load(args.nir) if args.nir else graph_from_checkpoint(args.checkpoint, datamodule)
        trained["cifarnet"] = (graph, "trained")
    timesteps = args.timesteps or ([8] if args.quick else [8, 32])
    if "accuracy" in sections:
        max_images = args.images or (500 if args.quick else None)
        results["accuracy"] = accuracy_section(
            graph, datamodule, timesteps, max_images, args.device, args.split
        )
    if "speed" in sections:
        steps = 8 if args.quick else 32
        results["speed"] = speed_section(steps, 2 if args.quick else 5,
                                         64 if args.quick else 512, args.device)  # fmt: skip
        print(json.dumps(results["speed"]))
    if "mapping" in sections:
        results["mapping"] = mapping_section(datamodule, 16 if args.quick else 128, trained)
    if {"ratio", "profile"} & set(sections) and graph is None:
        x = next(iter(datamodule.test_dataloader()))[0]
        graph = untrained_graph("cifarnet", x, widths=(32, 48, 96, 192))
    if "ratio" in sections:
        results["ratio"] = ratio_section(
            graph, datamodule, timesteps, args.images or 256, args.rounds, args.device
        )
    if "profile" in sections:
        results["profile"] = profile_section(
            graph, datamodule, timesteps[0], args.images or 64, args.device
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
