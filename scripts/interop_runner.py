"""Run a NIR file in one third-party importer; executed by that importer's own venv.

    python interop_runner.py IMPORTER GRAPH.nir IMAGES.npy TIMESTEPS OUT.npy [--running-sum]

Does not import neurocuda (the importer venvs do not have it). Feeds the images ``[B, C, H, W]`` as
a constant input current at each of ``TIMESTEPS`` steps (direct encoding) and saves the graph's
output ``[T, B, ...]`` as OUT.npy; ``--running-sum`` accumulates the per-step outputs over time (for
graphs whose output integrator ``I`` was removed). On failure it prints ``ERROR: <type>: <message>``
as its last line and exits with 1 (scripts/interop_matrix.py reads that line).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import numpy as np
import torch


def _step_all(module: Callable, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Call a stateful ``module(x, state) -> (y, state)`` once per step (nirtorch's convention)."""
    state = None
    outputs = []
    for _ in range(timesteps):
        result = module(x) if state is None else module(x, state)
        out, state = result if isinstance(result, tuple) else (result, None)
        outputs.append(out)
    return torch.stack(outputs)


def run_spikingjelly(path: str, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    # dt = 1.0 so that our r = 1 equals spikingjelly's required r = 1 / dt.
    return _step_all(import_from_nir(path, dt=1.0), x, timesteps)


def run_sinabs(path: str, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    import nir
    import sinabs.nir

    batch = x.shape[0]
    module = sinabs.nir.from_nir(nir.read(path), batch_size=batch)
    # sinabs' Squeeze layers take [B * T, ...] with the batch dimension outermost.
    flat = x.unsqueeze(1).expand(batch, timesteps, *x.shape[1:]).reshape(-1, *x.shape[1:])
    result = module(flat)
    out = result[0] if isinstance(result, tuple) else result
    return out.reshape(batch, timesteps, *out.shape[1:]).transpose(0, 1)


def run_norse(path: str, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    import nir
    import norse.torch

    return _step_all(norse.torch.from_nir(nir.read(path), dt=1.0), x, timesteps)


def run_snntorch(path: str, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    import nir
    from snntorch.import_nir import import_from_nir

    return _step_all(import_from_nir(nir.read(path)), x, timesteps)


RUNNERS = {
    "spikingjelly": run_spikingjelly,
    "sinabs": run_sinabs,
    "norse": run_norse,
    "snntorch": run_snntorch,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("importer", choices=sorted(RUNNERS))
    parser.add_argument("graph")
    parser.add_argument("images")
    parser.add_argument("timesteps", type=int)
    parser.add_argument("out")
    parser.add_argument("--running-sum", action="store_true")
    args = parser.parse_args(argv)
    x = torch.from_numpy(np.load(args.images)).float()
    try:
        with torch.no_grad():
            out = RUNNERS[args.importer](args.graph, x, args.timesteps)
            if args.running_sum:
                out = out.cumsum(0)
    except Exception as error:  # any importer failure is the measurement
        traceback.print_exc()
        message = " ".join(str(error).split())
        print(f"ERROR: {type(error).__name__}: {message}", flush=True)
        return 1
    np.save(args.out, out.detach().float().numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
