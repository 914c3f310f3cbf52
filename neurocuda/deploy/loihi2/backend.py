"""``deploy=loihi2``: the NIR graph compiled, quantized and run on the fixed-point simulator."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from neurocuda.batches import first_images
from neurocuda.deploy.base import Backend, BatchOutput
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.network import IntNetwork
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
    :mod:`neurocuda.deploy.loihi2.quantize`). ``bias_correction``: every bias absorbs the mean
    current its weights' rounding adds, measured by running the uncorrected network on the
    :meth:`calibrate` images at the T of each :meth:`run` (the quantizer's step 3; needs
    calibration). ``device``: where the integer simulation runs
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
        bias_correction: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("loihi2", "lava"):
            raise ValueError(f"loihi2 mode must be 'loihi2' or 'lava', got {mode!r}.")
        self.mode: SimMode = mode
        self.device = resolve_device(device)
        self.name = "loihi2" if mode == "loihi2" else "loihi2-lava"
        self.input_encoding = input_encoding
        self.encoding_given = input_encoding is not None
        self.headroom_bits = headroom_bits
        self.readout_headroom_bits = readout_headroom_bits
        self.channel_gains = channel_gains
        self.bias_correction = bias_correction
        self.quantization: QuantizationReport | None = None
        self.int_network: IntNetwork | None = None
        self._calibration: list[torch.Tensor] = []  # the calibration images (CPU)
        self._uncorrected: tuple[IntNetwork, QuantizationReport] | None = None
        self._corrected: dict[int, tuple[IntNetwork, QuantizationReport]] = {}  # by steps run

    def _prepare(self) -> None:
        self.resources = map_resources(self.network)
        self.int_network = None
        if self.input_encoding is not None:
            self.quantize_for(self.input_encoding)

    def calibrate(self, batches: Iterable) -> None:
        """Fit the graded-input encoding to ``batches`` (each channel's min..max; an encoding
        given to the constructor is kept), quantize the network for it and keep the images for
        the bias correction. Calibrate on training images, not on the images evaluated."""
        images = [x.detach().cpu() for x in first_images(batches)]
        if not images:
            raise ValueError("loihi2 calibration saw no data; check the calibration loader.")
        self._calibration = images
        encoding = self.input_encoding if self.encoding_given else None
        self.quantize_for(encoding or InputEncoding.from_batches([(x, None) for x in images]))

    def quantize_for(self, encoding: InputEncoding) -> None:
        """Fix the graded-input encoding and quantize the network for it (the bias correction
        follows at each T run)."""
        self.input_encoding = encoding
        self._uncorrected = self._quantize(None)
        self._corrected = {}
        self._use(*self._uncorrected)

    def _quantize(self, mean_inputs: dict | None) -> tuple[IntNetwork, QuantizationReport]:
        return quantize(
            self.network,
            self.input_encoding,
            self.mode,
            self.headroom_bits,
            self.readout_headroom_bits,
            self.channel_gains,
            mean_inputs,
        )

    def _use(self, network: IntNetwork, report: QuantizationReport) -> None:
        self.int_network, self.quantization = network, report
        self._output_scale = report.output_scale().to(self.device)

    def _bias_corrected(self, steps: int) -> tuple[IntNetwork, QuantizationReport]:
        """The network with biases corrected for runs of ``steps`` steps: mean spike rates (and
        payloads) of the uncorrected network on the calibration images over those steps."""
        if steps not in self._corrected:
            network, _ = self._uncorrected
            name = next(iter(network.inputs))
            payloads = [self.input_encoding.encode(x.to(self.device))[0] for x in self._calibration]
            images = sum(x.shape[0] for x in payloads)
            totals: dict[str, torch.Tensor] = {name: sum(x.sum(0) for x in payloads)}
            for payload in payloads:
                counts = simulate(network, {name: payload}, steps, self.mode).spike_counts
                for pop, count in counts.items():
                    totals[pop] = totals.get(pop, 0) + count
            means = {n: t.cpu().to(torch.float64) / images for n, t in totals.items()}
            means = {n: m if n == name else m / steps for n, m in means.items()}
            self._corrected[steps] = self._quantize(means)
        return self._corrected[steps]

    def _steps(self, timesteps: int) -> int:
        """Steps simulated for ``timesteps``: lava mode adds its pipeline's fill."""
        return timesteps + (self._uncorrected[0].depth() if self.mode == "lava" else 0)

    def prepare_for(self, timesteps: int) -> None:
        """Quantize for runs of ``timesteps`` steps: the bias correction measures spike rates
        over those steps on the calibration images."""
        if not self.bias_correction:
            return
        if not self._calibration:
            raise RuntimeError(
                "loihi2 bias correction measures spike rates on calibration images: call "
                "calibrate(batches of training images) before run(), or set "
                "bias_correction=False (deploy.backend.bias_correction=false)."
            )
        self._use(*self._bias_corrected(self._steps(timesteps)))

    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        if self.network is None:
            raise RuntimeError("loihi2: call prepare(graph) before run().")
        if self.int_network is None and not self.bias_correction:
            self.quantize_for(InputEncoding.from_batches([(inputs, None)]))
        self.prepare_for(timesteps)
        steps = self._steps(timesteps)
        payload, clipped = self.input_encoding.encode(inputs.to(self.device))
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
            info["bias_correction"] = {
                "enabled": self.bias_correction,
                "calibration_images": sum(x.shape[0] for x in self._calibration),
                "steps": sorted(self._corrected),
            }
            info["quantization"] = self.quantization.as_dict()
            info["quantization_saturations"] = self.quantization.saturations()
            info["pipeline_depth"] = self.int_network.depth()
        return info
