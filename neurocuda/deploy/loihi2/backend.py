"""``deploy=loihi2``: the NIR graph compiled, quantized and run on the fixed-point simulator."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from neurocuda.deploy.base import Backend, BatchOutput
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.quantize import QuantizationReport, quantize
from neurocuda.deploy.loihi2.resources import map_resources
from neurocuda.deploy.loihi2.simulator import SimMode, simulate
from neurocuda.devices import resolve_device


class Loihi2Backend(Backend):
    """Loihi 2 simulator target.

    ``mode``: ``loihi2`` (default; reset by subtraction, same-step delivery) or ``lava`` (Lava's
    LIF/Dense/Conv semantics, one step of delay per layer: the run is ``T + depth`` steps so the
    readout integrates T layer outputs). ``input_encoding``: how inputs become 8-bit graded
    payloads; ``None`` fits it in :meth:`calibrate` (or, without calibration, to the first batch
    run). ``channel_gains``: per-channel weight gains in the quantizer (see
    :mod:`neurocuda.deploy.loihi2.quantize`). ``device``: where the integer simulation runs
    (:func:`neurocuda.devices.resolve_device`; bit-exact on CUDA too, see the simulator).
    """

    def __init__(
        self,
        mode: SimMode = "loihi2",
        device: str = "auto",
        input_encoding: InputEncoding | None = None,
        headroom_bits: int = 6,
        readout_headroom_bits: int = 8,
        channel_gains: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("loihi2", "lava"):
            raise ValueError(f"loihi2 mode must be 'loihi2' or 'lava', got {mode!r}.")
        for key, bits in (
            ("headroom_bits", headroom_bits),
            ("readout_headroom_bits", readout_headroom_bits),
        ):
            if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 23:
                raise ValueError(
                    f"deploy.backend.{key}={bits!r} must be an integer in [0, 23] (the largest "
                    f"threshold is put at most at 2**(23 - {key}) in the 24-bit membrane)."
                )
        self.mode: SimMode = mode
        self.device = resolve_device(device)
        self.name = "loihi2" if mode == "loihi2" else "loihi2-lava"
        self.input_encoding = input_encoding
        self.encoding_given = input_encoding is not None
        self.headroom_bits = headroom_bits
        self.readout_headroom_bits = readout_headroom_bits
        self.channel_gains = channel_gains
        self.quantization: QuantizationReport | None = None
        self.int_network = None

    def _prepare(self) -> None:
        self.resources = map_resources(self.network)
        self.int_network = None
        if self.input_encoding is not None:
            self.quantize_for(self.input_encoding)

    def calibrate(self, batches: Iterable) -> None:
        """Fit the graded-input encoding to ``batches`` (each channel's min..max) and quantize
        the network for it; an encoding given to the constructor is kept."""
        if not self.encoding_given:
            self.quantize_for(InputEncoding.from_batches(batches))

    def quantize_for(self, encoding: InputEncoding) -> None:
        """Fix the graded-input encoding and quantize the network for it."""
        self.input_encoding = encoding
        self.int_network, self.quantization = quantize(
            self.network,
            encoding,
            self.mode,
            self.headroom_bits,
            self.readout_headroom_bits,
            self.channel_gains,
        )
        self._output_scale = self.quantization.output_scale().to(self.device)

    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        if self.network is None:
            raise RuntimeError("loihi2: call prepare(graph) before run().")
        (sample,) = self.network.inputs.values()
        if inputs.dim() != len(sample) + 1:
            raise ValueError(
                f"loihi2 takes a batch [B, {', '.join(map(str, sample))}] (graded input, the same "
                f"payload at every step), got shape {tuple(inputs.shape)}: a sequence per step "
                "(e.g. Poisson spikes) does not map to it."
            )
        if self.int_network is None:
            self.quantize_for(InputEncoding.from_batches([(inputs, None)]))
        payload, clipped = self.input_encoding.encode(inputs.to(self.device))
        steps = timesteps + (self.int_network.depth() if self.mode == "lava" else 0)
        name = next(iter(self.int_network.inputs))
        result = simulate(self.int_network, {name: payload}, steps, self.mode)
        readout = result.readout[-1].to(torch.float64)
        logits = readout * self._output_scale.reshape(-1, *([1] * (readout.dim() - 2)))
        counters = result.counters
        extra = {
            "input_clips": clipped,
            "current_wraps": sum(c.current_wraps for c in counters.values()),
            "voltage_clips": sum(c.voltage_clips for c in counters.values()),
            "dendrite_wraps": sum(c.dendrite_wraps for c in counters.values()),
        }
        return BatchOutput(
            logits=logits.float().cpu(),
            spikes={n: c.spikes for n, c in counters.items() if n != self.network.output},
            synops={n: c.synops for n, c in counters.items() if n != self.network.output},
            neuron_updates={n: c.neuron_updates for n, c in counters.items()},
            steps_run=steps,
            extra=extra,
        )

    def describe(self) -> dict:
        info = {
            "backend": self.name,
            "mode": self.mode,
            "device": str(self.device),
            "resources": self.resources.as_dict(),
        }
        if self.quantization is not None:
            info["quantization"] = self.quantization.as_dict()
            info["quantization_saturations"] = self.quantization.saturations()
            info["pipeline_depth"] = self.int_network.depth()
        return info
