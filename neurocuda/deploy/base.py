"""The deployment interface every target implements: ``prepare(graph)``, then ``run(x, T)``."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import nir
import torch

from neurocuda.deploy.loihi2.compiler import FloatNetwork, compile_graph

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

    ``spikes``/``synops``/``neuron_updates`` are totals over the batch and the steps, per layer.
    ``steps_run`` is how many steps the target needed (pipeline delays included).
    """

    logits: torch.Tensor
    spikes: dict[str, int]
    synops: dict[str, int]
    neuron_updates: dict[str, int]
    steps_run: int
    extra: dict[str, int] = field(default_factory=dict)


class Backend(ABC):
    """A deployment target. ``prepare`` once per graph, then ``run`` on batches."""

    name: str = "backend"

    def __init__(self) -> None:
        self.network: FloatNetwork | None = None
        self.graph: nir.NIRGraph | None = None

    def prepare(self, graph: GraphLike) -> None:
        """Load ``graph`` and build whatever the target runs."""
        self.graph = load_graph(graph)
        self.network = compile_graph(self.graph)
        self._prepare()

    @abstractmethod
    def _prepare(self) -> None: ...

    @abstractmethod
    def run(self, inputs: torch.Tensor, timesteps: int) -> BatchOutput:
        """Run ``inputs`` (``[B, C, H, W]``, a constant current, or ``[T, B, ...]``) for T steps."""

    def describe(self) -> dict:
        """Target-specific facts for the report (device, quantization, resources...)."""
        return {"backend": self.name}

    def layer_names(self) -> list[str]:
        """Population names in order (the report's layers)."""
        if self.network is None:
            raise RuntimeError(f"{self.name}: call prepare(graph) before running.")
        return [p.name for p in self.network.populations]
