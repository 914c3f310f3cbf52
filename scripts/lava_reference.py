"""Run an integer network spec with lava-nc's bit-accurate CPU models (the Lava venv's python).

Usage: ``.cache/lava-venv/bin/python scripts/lava_reference.py SPEC.json RESULT.json``

SPEC holds a network as written by :func:`neurocuda.deploy.loihi2.network.to_json` plus ``steps``
and ``input_data`` (``{name: [T, *shape]}``, one sample). Populations become ``LIF`` processes,
dense projections ``Dense``, conv projections ``Conv``, inputs ``RingBuffer`` sources; all run
under ``Loihi2SimCfg(select_tag="fixed_pt")``. RESULT holds, per population, ``u``, ``v`` and ``s``
recorded by ``Monitor`` processes at every step, in neurocuda's layout (``[C, H, W]`` / ``[N]``);
Lava's own layout for conv populations is ``(W, H, C)``, converted on the way in and out.
Also reports the wall time of ``run`` (``seconds``). Needs only numpy and lava, plus the project's
standard-library ``neurocuda/files.py`` for the atomic write of RESULT (no torch in the Lava venv).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIF
from lava.proc.monitor.process import Monitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # neurocuda/ itself is not installed
from neurocuda.files import atomic_write_text  # standard library only


def to_lava(array: np.ndarray) -> np.ndarray:
    """(C, H, W, ...) -> (W, H, C, ...); 1-D arrays unchanged."""
    if array.ndim >= 3:
        return np.ascontiguousarray(np.swapaxes(array, 0, 2))
    return array


def from_lava(array: np.ndarray, ndim: int) -> np.ndarray:
    """Monitor data ``[T, *lava_shape]`` -> ``[T, *our_shape]``."""
    return np.swapaxes(array, 1, 3) if ndim == 3 else array


def dense_weight(weight: np.ndarray, src_shape: list[int]) -> np.ndarray:
    """Reorder columns from our C-order (C, H, W) flattening to Lava's (W, H, C) flattening."""
    if len(src_shape) != 3:
        return weight
    c, h, w = src_shape
    return weight.reshape(-1, c, h, w).transpose(0, 3, 2, 1).reshape(weight.shape[0], -1)


def conv_weight(weight: np.ndarray) -> np.ndarray:
    """Torch correlation kernel [Co, Ci, kH, kW] -> Lava's convolution kernel (Co, kW, kH, Ci).

    Lava flips the kernel before correlating (``weight[:, ::-1, ::-1]`` in lava.proc.conv.utils).
    """
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def build_and_run(spec: dict) -> dict:
    steps = int(spec["steps"])
    shapes = {name: list(shape) for name, shape in spec["inputs"].items()}
    ports = {}
    for name, data in spec["input_data"].items():
        series = to_lava(np.moveaxis(np.asarray(data, dtype=np.int32), 0, -1))
        source = RingBuffer(data=series)
        ports[name] = source.s_out
    neurons = {}
    for pop in spec["populations"]:
        shape = list(pop["shape"])
        shapes[pop["name"]] = shape
        vth = np.unique(np.asarray(pop["vth"]))
        lava_like = pop["reset"] == "zero" and pop["vth_shift"] == pop["act_shift"] == 6
        if vth.size != 1 or not lava_like or not pop["spiking"]:
            raise ValueError(
                f"{pop['name']}: not expressible as a Lava LIF (scalar vth, reset to 0)"
            )
        lif = LIF(
            shape=tuple(to_lava(np.zeros(shape)).shape),
            u=0,
            v=to_lava(np.asarray(pop["v_init"], dtype=np.int32)),
            du=int(pop["du"]),
            dv=int(pop["dv"]),
            vth=int(vth[0]),
            bias_mant=to_lava(np.asarray(pop["bias_mant"], dtype=np.int32)),
            bias_exp=to_lava(np.asarray(pop["bias_exp"], dtype=np.int32)),
            name=pop["name"],
        )
        neurons[pop["name"]] = lif
        ports[pop["name"]] = lif.s_out
    for proj in spec["projections"]:
        src_shape = shapes[proj["source"]]
        weight = np.asarray(proj["weight"], dtype=np.int32)
        bits = 8 if proj["graded"] else 0
        if proj["kind"] == "dense":
            synapse = Dense(
                weights=dense_weight(weight, src_shape),
                weight_exp=int(proj["weight_exp"]),
                num_weight_bits=int(proj["num_weight_bits"]),
                num_message_bits=bits,
            )
            out = ports[proj["source"]]
            out = out.flatten() if len(src_shape) != 1 else out
            out.connect(synapse.s_in)
            target = neurons[proj["target"]]
            a_out = synapse.a_out
            if len(target.a_in.shape) != 1:
                a_out = a_out.reshape(target.a_in.shape)
            a_out.connect(target.a_in)
        else:
            synapse = Conv(
                weight=conv_weight(weight),
                weight_exp=int(proj["weight_exp"]),
                input_shape=tuple(to_lava(np.zeros(src_shape)).shape),
                padding=tuple(proj["padding"][::-1]),
                stride=tuple(proj["stride"][::-1]),
                dilation=tuple(proj["dilation"][::-1]),
                groups=int(proj["groups"]),
                num_weight_bits=int(proj["num_weight_bits"]),
                num_message_bits=bits,
            )
            ports[proj["source"]].connect(synapse.s_in)
            synapse.a_out.connect(neurons[proj["target"]].a_in)
    monitors = {}
    for name, lif in neurons.items():
        monitors[name] = {}
        for key, target in (("u", lif.u), ("v", lif.v), ("s", lif.s_out)):
            monitor = Monitor()
            monitor.probe(target, steps)
            monitors[name][key] = (monitor, target)
    anchor = next(iter(neurons.values()))
    start = time.perf_counter()
    anchor.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    seconds = time.perf_counter() - start
    result: dict = {"seconds": seconds, "populations": {}}
    for name, probes in monitors.items():
        ndim = len(shapes[name])
        result["populations"][name] = {}
        for key, (monitor, target) in probes.items():
            data = monitor.get_data()[name][target.name]
            result["populations"][name][key] = from_lava(np.asarray(data), ndim).tolist()
    anchor.stop()
    return result


def main() -> None:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    atomic_write_text(result_path, json.dumps(build_and_run(spec)))


if __name__ == "__main__":
    main()
