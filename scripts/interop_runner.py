"""Run a NIR file in one third-party importer; executed by that importer's own venv.

    python interop_runner.py IMPORTER GRAPH.nir INPUT.npy OUT.npy [--dt DT] [--reset subtract]
    python interop_runner.py --produce PRODUCER GRAPH.nir INPUT.npy OUT.npy

The second form is the import side: PRODUCER builds a small network of its own (seeded), exports
it with its own NIR exporter to GRAPH.nir and saves the spikes it computes itself on INPUT.npy
``[T, B, features]`` as OUT.npy ``[T, B, 4]`` (``PRODUCERS``).

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


CONVENTIONS = ("nir", "subtract", "spikingjelly", "snntorch", "sinabs")
"""The files' ``signature_reset_convention`` values (``neurocuda.nir.metadata.RESET_CONVENTIONS``;
this script runs without neurocuda); only norse is told one (``--reset subtract``)."""
HIDDEN, OUTPUTS = 8, 4
"""Producer networks: ``Linear(features, 8) -> neuron -> Linear(8, 4) -> neuron``."""


def _weights(features: int) -> list[torch.nn.Linear]:
    torch.manual_seed(0)
    first, second = torch.nn.Linear(features, HIDDEN), torch.nn.Linear(HIDDEN, OUTPUTS)
    with torch.no_grad():  # strong enough that most neurons fire within a few steps
        first.weight.mul_(3.0)
        second.weight.mul_(3.0)
        second.bias.add_(1.0)
    return [first, second]


def produce_snntorch(path: str, x: torch.Tensor) -> torch.Tensor:
    """``Leaky(beta=0.9)`` with snnTorch's default reset by subtraction; ``beta`` per neuron (a
    scalar one is exported as a shapeless ``LIF`` that nir's type check refuses), so ``threshold``
    too."""
    import nir
    import snntorch
    from snntorch.export_nir import export_to_nir

    first, second = _weights(x.shape[-1])
    net = torch.nn.Sequential(
        first,
        snntorch.Leaky(
            beta=0.9 * torch.ones(HIDDEN), threshold=torch.ones(HIDDEN), init_hidden=True
        ),
        second,
        snntorch.Leaky(
            beta=0.9 * torch.ones(OUTPUTS),
            threshold=torch.ones(OUTPUTS),
            init_hidden=True,
            output=True,
        ),
    )
    nir.write(path, export_to_nir(net, x[0, 0]))  # one sample: a batch would enter the types
    import snntorch.utils

    snntorch.utils.reset(net)
    return torch.stack([net(step)[0] for step in x])


def produce_norse(path: str, x: torch.Tensor) -> torch.Tensor:
    """``LIFBoxCell`` (leaky integrate-and-fire without synapse, reset to 0) at norse's dt 1e-3,
    with per-neuron parameters (norse's scalar defaults make ``nir.write`` fail)."""
    import nir
    import norse.torch

    def cell(size: int) -> torch.nn.Module:
        ones = torch.ones(size)
        p = norse.torch.LIFBoxParameters(
            tau_mem_inv=500 * ones, v_leak=0 * ones, v_th=ones, v_reset=0 * ones
        )
        return norse.torch.LIFBoxCell(p)

    first, second = _weights(x.shape[-1])
    net = norse.torch.SequentialState(first, cell(HIDDEN), second, cell(OUTPUTS))
    nir.write(path, norse.torch.to_nir(net, x[0, 0]))  # one sample: a batch enters the types
    return _step_all(net, x)


def produce_sinabs(path: str, x: torch.Tensor) -> torch.Tensor:
    """``IAF`` as sinabs' own ``from_nir`` builds it (multi-spike, subtract, ``min_v_mem`` =
    ``-threshold``); sinabs layers take ``[B, T, ...]``. Written with sinabs' nir 1.0.4."""
    import nir
    import sinabs.layers as sl
    import sinabs.nir

    steps, batch = x.shape[:2]
    first, second = _weights(x.shape[-1])

    def iaf() -> torch.nn.Module:
        return sl.IAFSqueeze(min_v_mem=-1.0, batch_size=batch)

    net = torch.nn.Sequential(first, iaf(), second, iaf())
    flat = x.transpose(0, 1).reshape(batch * steps, -1)  # [B * T, ...], batch outermost
    # its exporter drops dim 0 (B * T) from the types and reads the layers' state shapes
    nir.write(path, sinabs.nir.to_nir(net, flat))
    for layer in net:
        if isinstance(layer, sl.IAFSqueeze):
            layer.reset_states()
    return net(flat).reshape(batch, steps, -1).transpose(0, 1)


def produce_spikingjelly(path: str, x: torch.Tensor) -> torch.Tensor:
    """Multi-step ``IFNode`` (hard reset to 0, fires on ``v >= 1``) between ``layer.Linear``s,
    exported with spikingjelly's own ``export_to_nir`` at ``dt = 1`` (so ``IF.r = 1 / dt = 1``)."""
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    first, second = _weights(x.shape[-1])

    def linear(weights: torch.nn.Linear) -> torch.nn.Module:
        module = layer.Linear(weights.in_features, weights.out_features, step_mode="m")
        module.load_state_dict(weights.state_dict())
        return module

    def if_node() -> torch.nn.Module:
        return neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="m")

    net = torch.nn.Sequential(linear(first), if_node(), linear(second), if_node())
    export_to_nir(net, x[:, :1], save_path=path, dt=1.0)  # [T, 1, ...]: multi-step
    functional.reset_net(net)
    return net(x)


def produce_rockpool(path: str, x: torch.Tensor) -> torch.Tensor:
    """``LinearTorch -> LIFTorch`` (current-based LIF, rockpool's defaults); ``[B, T, ...]``."""
    import nir
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    first, second = _weights(x.shape[-1])
    net = Sequential(
        LinearTorch((x.shape[-1], HIDDEN), weight=first.weight.T, has_bias=False),
        LIFTorch(HIDDEN),
        LinearTorch((HIDDEN, OUTPUTS), weight=second.weight.T, has_bias=False),
        LIFTorch(OUTPUTS),
    )
    nir.write(path, to_nir(net))
    out, _, _ = net(x.transpose(0, 1))
    return out.transpose(0, 1)


PRODUCERS = {
    "spikingjelly": produce_spikingjelly,
    "snntorch": produce_snntorch,
    "norse": produce_norse,
    "sinabs": produce_sinabs,
    "rockpool": produce_rockpool,
}

RUNNERS = {
    "spikingjelly": run_spikingjelly,
    "sinabs": run_sinabs,
    "norse": run_norse,
    "snntorch": run_snntorch,
    "spyx": run_spyx,
    "rockpool": run_rockpool,
}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--produce"]:
        return produce(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("importer", choices=sorted(RUNNERS))
    parser.add_argument("graph")
    parser.add_argument("input")
    parser.add_argument("out")
    parser.add_argument("--dt", type=float, default=1.0)
    parser.add_argument("--reset", choices=CONVENTIONS, default="nir")
    args = parser.parse_args(argv)
    return _save_output(lambda x: RUNNERS[args.importer](args.graph, x, args), args.input, args.out)


def produce(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="export a producer's network and its spikes")
    parser.add_argument("producer", choices=sorted(PRODUCERS))
    parser.add_argument("graph")
    parser.add_argument("input")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    return _save_output(lambda x: PRODUCERS[args.producer](args.graph, x), args.input, args.out)


def _save_output(run: Callable[[torch.Tensor], torch.Tensor], input_file: str, out: str) -> int:
    """``run`` on INPUT.npy, its output saved as OUT.npy; exit status 0, or 1 with an ``ERROR:``
    line when it raises (any importer or producer failure is the measurement)."""
    x = torch.from_numpy(np.load(input_file)).float()
    try:
        with torch.no_grad():
            output = run(x)
    except Exception as error:
        traceback.print_exc()
        message = " ".join(str(error).split())
        print(f"ERROR: {type(error).__name__}: {message}", flush=True)
        return 1
    np.save(out, output.detach().float().numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
