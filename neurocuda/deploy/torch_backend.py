"""``deploy=gpu`` / ``deploy=cpu``: the float NIR graph on a torch device with the NIR executor."""

from __future__ import annotations

import torch

from neurocuda.deploy.base import Backend, BatchOutput
from neurocuda.devices import resolve_device


class TorchBackend(Backend):
    """Runs the exported graph with :class:`neurocuda.nir.Executor` in float32 on ``device``
    (:func:`neurocuda.devices.resolve_device`: ``auto``, ``gpu``, ``cpu``...).

    Spikes are read with forward hooks on each population's spiking node (or on the node that
    consumes its spikes), so the executor itself is unchanged.
    """

    def __init__(self, device: str = "auto") -> None:
        super().__init__()
        try:
            self.device = resolve_device(device)
        except RuntimeError as error:  # no GPU: say it in the deploy group's terms
            hint = "Here: deploy=cpu, or deploy.backend.device=auto."
            raise RuntimeError(f"{error} {hint}") from error
        self.name = "gpu" if self.device.type == "cuda" else "cpu"

    def _prepare(self) -> None:
        from neurocuda.nir import Executor

        self.executor = Executor(self.graph).to(self.device).eval()
        self._counts: dict[str, torch.Tensor] = {}
        self._fan_out: dict[str, torch.Tensor] = {}
        for pop in self.network.populations:
            if pop.kind == "readout":
                continue
            self._fan_out[pop.name] = self.network.fan_out(pop.name, self.device)
            node, side = pop.spike_tap
            self._hook(self.executor.op(node), pop.name, pop.shape, side)

    def _hook(self, module: torch.nn.Module, name: str, shape, side: str) -> None:
        def record(spikes: torch.Tensor) -> None:
            per_neuron = spikes.detach().reshape(-1, *shape).sum(0)
            self._counts[name] = self._counts.get(name, 0) + per_neuron

        if side == "output":
            module.register_forward_hook(lambda m, args, out: record(out))
        else:
            module.register_forward_pre_hook(lambda m, args: record(args[0]))

    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        x = inputs.to(self.device)
        if x.dim() == len(self.executor.input_shape or ()) + 1:
            x = x.unsqueeze(0).expand(timesteps, *x.shape)
        self._counts = {}
        with torch.no_grad():
            trace = self.executor(x)
        batch = x.shape[1]
        spikes, synops, updates = {}, {}, {}
        for pop in self.network.populations:
            neurons = int(torch.Size(pop.shape).numel())
            updates[pop.name] = neurons * batch * timesteps
            if pop.kind == "readout":
                continue
            count = self._counts.get(pop.name)
            if count is None:
                raise RuntimeError(
                    f"No spikes were recorded for {pop.name}; executor layout changed?"
                )
            spikes[pop.name] = int(count.sum())
            synops[pop.name] = int((count * self._fan_out[pop.name]).sum())
        return BatchOutput(trace[-1].float().cpu(), spikes, synops, updates, timesteps)

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "dtype": "float32"}
