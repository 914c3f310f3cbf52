"""Run a NIR file in one third-party importer; executed by that importer's own venv.

    python interop_runner.py IMPORTER GRAPH.nir INPUT.npy OUT.npy [--dt DT] [--reset subtract]

Does not import neurocuda (the importer venvs do not have it). INPUT.npy is the whole input
``[T, B, C, H, W]`` (the caller appends a portable profile's indicator channel); the graph's output
``[T, B, ...]`` is saved as OUT.npy as the importer returns it (the caller integrates per-step
outputs). ``--dt`` is the time step handed to importers that take one; ``--reset subtract`` asks
norse for its subtractive reset. On failure it prints ``ERROR: <type>: <message>``
as its last line and exits with 1 (scripts/interop_matrix.py reads that line).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import numpy as np
import torch


def _step_all(module: Callable, x: torch.Tensor) -> torch.Tensor:
    """Call ``module(x_t, state) -> (y, state)`` once per step (nirtorch's convention)."""
    state = None
    outputs = []
    for step in x:
        result = module(step) if state is None else module(step, state)
        out, state = result if isinstance(result, tuple) else (result, None)
        outputs.append(out)
    return torch.stack(outputs)


def run_spikingjelly(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    # spikingjelly requires r = 1 / dt; our IF nodes have r = 1.
    return _step_all(import_from_nir(path, dt=args.dt), x)


def run_sinabs(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    import nir
    import sinabs.nir

    steps, batch = x.shape[:2]
    module = sinabs.nir.from_nir(nir.read(path), batch_size=batch)
    # sinabs' Squeeze layers take [B * T, ...] with the batch dimension outermost.
    result = module(x.transpose(0, 1).reshape(-1, *x.shape[2:]))
    out = result[0] if isinstance(result, tuple) else result
    return out.reshape(batch, steps, *out.shape[1:]).transpose(0, 1)


def run_norse(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    import nir
    import norse.torch
    from norse.torch.functional import reset

    method = reset.reset_subtract if args.reset == "subtract" else reset.reset_value
    return _step_all(norse.torch.from_nir(nir.read(path), dt=args.dt, reset_method=method), x)


def run_snntorch(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    import nir
    from snntorch.import_nir import import_from_nir

    return _step_all(import_from_nir(nir.read(path)), x)


def run_spyx(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    import jax.numpy as jnp
    import nir
    import spyx.nir

    # spyx is channels-last: [T, B, H, W, C]
    data = jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy()) if x.dim() == 5 else jnp.asarray(x)
    _, out = spyx.nir.from_nir(nir.read(path), data, dt=args.dt)
    return torch.from_numpy(np.asarray(out))


def run_rockpool(path: str, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    from rockpool.nn.modules.torch.nir import from_nir

    module = from_nir(path)
    out = module(x.transpose(0, 1))  # rockpool is batch-major: [B, T, ...]
    out = out[0] if isinstance(out, tuple) else out
    return out.transpose(0, 1)


RUNNERS = {
    "spikingjelly": run_spikingjelly,
    "sinabs": run_sinabs,
    "norse": run_norse,
    "snntorch": run_snntorch,
    "spyx": run_spyx,
    "rockpool": run_rockpool,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("importer", choices=sorted(RUNNERS))
    parser.add_argument("graph")
    parser.add_argument("input")
    parser.add_argument("out")
    parser.add_argument("--dt", type=float, default=1.0)
    parser.add_argument("--reset", choices=["nir", "subtract", "sinabs"], default="nir")
    args = parser.parse_args(argv)
    x = torch.from_numpy(np.load(args.input)).float()
    try:
        with torch.no_grad():
            out = RUNNERS[args.importer](args.graph, x, args)
    except Exception as error:  # any importer failure is the measurement
        traceback.print_exc()
        message = " ".join(str(error).split())
        print(f"ERROR: {type(error).__name__}: {message}", flush=True)
        return 1
    np.save(args.out, out.detach().float().numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
