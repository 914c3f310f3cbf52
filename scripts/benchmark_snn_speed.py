"""Images/s of our multi-step SNN runtime at T=8 against spikingjelly and against T ANN forwards
(and against itself with its IF neurons, scales and pooling run one by one:
``fuse_activations=False``, and with its fused activations in tensor operations, not the CPU
kernels: ``compiled_kernel=False``).

    PYTHONPATH=/tmp/sj_pkgs python scripts/benchmark_snn_speed.py [--ckpt CKPT] [--arch cifarnet]

spikingjelly is only needed here (not a project dependency): install it apart, e.g.
``pip install --no-deps --target /tmp/sj_pkgs spikingjelly==0.0.0.0.14``. Its network gets the
same weights: our converted network with each IF neuron replaced by ``IFNode(step_mode="m")`` (soft
reset, same threshold) and every stateless layer wrapped in ``SeqToANNContainer``, fed the usual
``[T, B, C, H, W]`` repeated input. Thresholds are per layer and the initial membrane 0 here, as
spikingjelly's IFNode supports. Timings: --repeats rounds, the three methods alternating within
each round (this machine's speed drifts between runs); images/s are medians over rounds, and the
ratios (ours / T ANN forwards in time, spikingjelly / ours in time) medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.devices import resolve_device, synchronize
from neurocuda.models import build_model
from neurocuda.snn import IFNeuron, OutputIntegrator, Scale, SpikingModel
from neurocuda.snn.layout import memory_format
from neurocuda.training import ClassifierModule


class _Cumulative(nn.Module):
    """Output integrator on ``[T, B, classes]`` for the spikingjelly network."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(y, dim=0)


def spikingjelly_network(snn: SpikingModel) -> nn.Module:
    """The same network in spikingjelly's multi-step idiom."""
    from spikingjelly.activation_based import layer, neuron

    net = copy.deepcopy(snn.network)
    for name, module in list(net.named_modules()):
        if isinstance(module, IFNeuron):
            node = neuron.IFNode(v_threshold=float(module.threshold), v_reset=None, step_mode="m")
            net.set_submodule(name, node)
        elif isinstance(module, OutputIntegrator):
            net.set_submodule(name, _Cumulative())
        elif isinstance(module, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.Flatten)):
            net.set_submodule(name, layer.SeqToANNContainer(module))
        elif (
            name
            and not isinstance(module, (Scale, nn.Identity, nn.Sequential))
            and not list(module.children())
            and type(module).__name__ != "Add"
        ):
            raise TypeError(f"No spikingjelly mapping for {name} ({type(module).__name__}).")
    return net


def timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ckpt", help="checkpoint (default: random cifarnet weights)")
    parser.add_argument("--arch", default="cifarnet")
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), gpu, cuda:N or cpu"
    )
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    try:
        from spikingjelly.activation_based import functional
    except ImportError:
        parser.exit(
            1,
            "spikingjelly is not installed (not a project dependency): run\n"
            "  pip install --no-deps --target /tmp/sj_pkgs spikingjelly==0.0.0.0.14\n"
            "and PYTHONPATH=/tmp/sj_pkgs python scripts/benchmark_snn_speed.py ...\n",
        )

    torch.manual_seed(0)
    if args.ckpt:
        ann = ClassifierModule.load_from_checkpoint(args.ckpt, map_location="cpu").net
    else:
        ann = build_model(args.arch)
    # the ANN in the runtime's layout (channels-last on CPU: the faster one for the ANN too, and
    # what a checkpoint trained channels-last loads as): random and trained baselines compare alike
    ann = ann.to(args.device, memory_format=memory_format(args.device)).eval()
    calib = [torch.randn(args.batch, 3, 32, 32, device=args.device) for _ in range(2)]
    # spikingjelly's IFNode has one scalar initial membrane: no per-channel correction
    config = ConversionConfig(per_channel=False, v_init=0.0, correction_timesteps=0)
    snn = convert(ann, calib, config)
    sj = spikingjelly_network(snn).to(args.device).eval()
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    steps = args.timesteps

    def run_sj() -> torch.Tensor:
        functional.reset_net(sj)
        return sj(x.unsqueeze(0).repeat(steps, 1, 1, 1, 1))

    def run_ann() -> None:
        for _ in range(steps):
            ann(x)

    unfused = copy.deepcopy(snn)
    unfused.fuse_activations = False
    tensor_ops = copy.deepcopy(snn)
    tensor_ops.compiled_kernel = False
    methods = {
        "neurocuda": lambda: snn(x, steps),
        "neurocuda tensor ops": lambda: tensor_ops(x, steps),
        "neurocuda unfused": lambda: unfused(x, steps),
        "spikingjelly": run_sj,
        f"{steps} x ANN": run_ann,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    with torch.inference_mode():
        agree = float((snn(x, steps)[-1].argmax(-1) == run_sj()[-1].argmax(-1)).float().mean())
        reference = unfused(x, steps)
        for other in (snn, tensor_ops):
            if not torch.equal(other(x, steps), reference):
                raise AssertionError(
                    "The fused and unfused runtimes disagree: a bug, please report."
                )
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, fn in methods.items():
                times[name].append(timed(fn, args.device))
    speed = {name: args.batch / statistics.median(t[1:]) for name, t in times.items()}
    rounds = list(zip(*(times[name][1:] for name in methods), strict=True))
    ann_name = f"{steps} x ANN"
    names = list(methods)
    per_round = {
        f"neurocuda time / {ann_name} time": [
            r[names.index("neurocuda")] / r[names.index(ann_name)] for r in rounds
        ],
        "spikingjelly time / neurocuda time": [
            r[names.index("spikingjelly")] / r[names.index("neurocuda")] for r in rounds
        ],
        "neurocuda unfused time / neurocuda time": [
            r[names.index("neurocuda unfused")] / r[names.index("neurocuda")] for r in rounds
        ],
        "neurocuda tensor ops time / neurocuda time": [
            r[names.index("neurocuda tensor ops")] / r[names.index("neurocuda")] for r in rounds
        ],
    }
    table = Table(title=f"{args.arch} T={steps} batch={args.batch} on {args.device}")
    for col in ("method", "images/s", "neurocuda speed-up"):
        table.add_column(col, justify="right")
    for name, ips in speed.items():
        table.add_row(name, f"{ips:.1f}", f"{speed['neurocuda'] / ips:.2f}x")
    console = Console()
    console.print(table)
    for name, ratios in per_round.items():
        console.print(
            f"{name}: {statistics.median(ratios):.3f} (median of {len(ratios)} interleaved rounds; "
            f"min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    console.print(f"prediction agreement neurocuda vs spikingjelly ('>' vs '>='): {agree:.2%}")


if __name__ == "__main__":
    main()
