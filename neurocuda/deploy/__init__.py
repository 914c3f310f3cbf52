"""Deployment targets behind one interface: ``prepare(graph) -> run(x, T) -> report``.

``build_backend("gpu" | "cpu" | "loihi2", **options)`` picks a target; :func:`deploy` runs it over
a data loader and returns a :class:`DeploymentReport`.
"""

from __future__ import annotations

from typing import Any

from neurocuda.deploy.base import Backend, BatchOutput, load_graph
from neurocuda.deploy.evaluate import DeploymentReport, LayerReport, deploy
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.loihi2.compiler import GraphCompileError, compile_graph
from neurocuda.deploy.torch_backend import TorchBackend

TARGETS = ("gpu", "cpu", "loihi2")


def build_backend(target: str, **options: Any) -> Backend:
    """Create the backend for ``target`` (``deploy.target`` in the config)."""
    if target in ("gpu", "cpu"):
        return TorchBackend(device=target)
    if target == "loihi2":
        return Loihi2Backend(**options)
    raise ValueError(f"Unknown deploy target {target!r}; choose one of {list(TARGETS)}.")


__all__ = [
    "TARGETS",
    "Backend",
    "BatchOutput",
    "DeploymentReport",
    "GraphCompileError",
    "LayerReport",
    "Loihi2Backend",
    "TorchBackend",
    "build_backend",
    "compile_graph",
    "deploy",
    "load_graph",
]
