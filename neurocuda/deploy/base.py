"""The interface every deploy target implements: ``prepare(graph) -> calibrate(batches) ->
run(inputs, T)``, then :func:`neurocuda.deploy.deploy` assembles the report."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nir
import torch

from neurocuda.deploy.network import FloatNetwork, compile_graph

GraphLike = nir.NIRGraph | str | os.PathLike


def load_graph(graph: GraphLike) -> nir.NIRGraph:
    """Return ``graph`` itself, or the graph read from a ``.nir`` file."""
    if isinstance(graph, nir.NIRGraph):
        return graph
    path = Path(graph)
    if not path.is_file():
        raise FileNotFoundError(f"No NIR file at {path}; export one (scripts/convert.py) first.")
    from neurocuda.nir import load

    return load(path)


@dataclass
class BatchOutput:
    """One batch's result: the integrated output ``[B, classes]`` after T steps and counts.

    ``spikes``/``synops``/``neuron_updates`` are totals over the batch and the steps, per layer;
    a synop is one spike over one synapse of the deployed layer, average pooling folded into the
    layer after it (so not the runtime's count, :mod:`neurocuda.metrics.spikes`, where pooling
    merges spikes first).
    ``steps_run`` is how many steps the target needed (pipeline delays included).
    """

    logits: torch.Tensor
    spikes: dict[str, int]
    synops: dict[str, int]
    neuron_updates: dict[str, int]
    steps_run: int
    extra: dict[str, int] = field(default_factory=dict)


class Backend(ABC):
    """A deploy target: ``prepare`` once per graph, ``calibrate`` on a few batches, then ``run``.

    A new target subclasses this in one module and is named, with its options, by the
    ``backend._target_`` of one YAML file in ``configs/deploy/`` (docs/architecture.md).
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.network: FloatNetwork | None = None
        self.graph: nir.NIRGraph | None = None

    def prepare(self, graph: GraphLike) -> None:
        """Load ``graph``, compile it into :attr:`network` and build what the target runs."""
        self.graph = load_graph(graph)
        self.network = compile_graph(self.graph)
        self._prepare()

    @abstractmethod
    def _prepare(self) -> None:
        """Build the target's runnable form of :attr:`graph` / :attr:`network`."""

    def calibrate(self, batches: Iterable) -> None:  # noqa: B027  (optional step, no-op here)
        """Fit settings that depend on the data to ``batches`` (``(x, y)`` or ``x``); by default
        there are none."""

    @abstractmethod
    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        """Run ``inputs`` (``[B, C, H, W]``, a constant current, or ``[T, B, ...]``) for T steps."""

    def describe(self) -> dict:
        """Target-specific facts for the report (device, quantization, resources...)."""
        return {"backend": self.name}
