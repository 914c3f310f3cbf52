"""``deploy=loihi2``: the NIR graph compiled, quantized and run on the fixed-point simulator."""

from __future__ import annotations

import torch

from neurocuda.deploy.base import Backend, BatchOutput
from neurocuda.deploy.loihi2.quantize import INPUT_MAX, QuantizationReport, quantize
from neurocuda.deploy.loihi2.resources import map_resources
from neurocuda.deploy.loihi2.simulator import SimMode, simulate
from neurocuda.deploy.torch_backend import resolve_device


class Loihi2Backend(Backend):
    """Loihi 2 simulator target.

    ``mode``: ``loihi2`` (default; reset by subtraction, same-step delivery) or ``lava`` (Lava's
    LIF/Dense/Conv semantics, one step of delay per layer: the run is ``T + depth`` steps so the
    readout integrates T layer outputs). ``input_scale``: the graded-input LSB; ``None`` calibrates
    it once, from the first batch (``max |x| / 127``), and keeps it.
    """

    def __init__(
        self,
        mode: SimMode = "loihi2",
        device: str = "cpu",
        input_scale: float | None = None,
        headroom_bits: int = 6,
        readout_headroom_bits: int = 8,
    ) -> None:
        super().__init__()
        if mode not in ("loihi2", "lava"):
            raise ValueError(f"loihi2 mode must be 'loihi2' or 'lava', got {mode!r}.")
        self.mode: SimMode = mode
        self.device = resolve_device(device)
        self.name = "loihi2" if mode == "loihi2" else "loihi2-lava"
        self.input_scale = input_scale
        self.headroom_bits = headroom_bits
        self.readout_headroom_bits = readout_headroom_bits
        self.quantization: QuantizationReport | None = None
        self.int_network = None

    def _prepare(self) -> None:
        self.resources = map_resources(self.network)
        self.int_network = None
        if self.input_scale is not None:
            self.calibrate(self.input_scale)

    def calibrate(self, input_scale: float) -> None:
        """Fix the graded-input LSB and quantize the network for it."""
        self.input_scale = input_scale
        self.int_network, self.quantization = quantize(
            self.network, input_scale, self.mode, self.headroom_bits, self.readout_headroom_bits
        )

    def encode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Graded 8-bit payloads for ``inputs`` and how many values were clipped."""
        scaled = torch.round(inputs / self.input_scale)
        clipped = int((scaled.abs() > INPUT_MAX).sum())
        return scaled.clamp(-INPUT_MAX, INPUT_MAX).to(torch.int64), clipped

    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        if self.network is None:
            raise RuntimeError("loihi2: call prepare(graph) before run().")
        if self.int_network is None:
            peak = float(inputs.abs().max())
            self.calibrate(peak / INPUT_MAX if peak > 0 else 1.0)
        payload, clipped = self.encode(inputs.to(self.device))
        steps = timesteps + (self.int_network.depth() if self.mode == "lava" else 0)
        name = next(iter(self.int_network.inputs))
        result = simulate(self.int_network, {name: payload}, steps, self.mode)
        logits = result.readout[-1].to(torch.float64) * self.quantization.layers[-1].membrane_lsb
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
