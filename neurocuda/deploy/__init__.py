"""Deploy targets behind one interface: ``prepare(graph) -> calibrate(batches) -> run(x, T)``.

:func:`compile_graph` turns a NIR graph into the float network every target reads;
:func:`deploy` runs a prepared :class:`Backend` over a data loader and returns a
:class:`DeploymentReport`; :func:`run_deployment` does all of it and writes the report. Targets:
:class:`neurocuda.deploy.torch_backend.TorchBackend` (``gpu``/``cpu``) and
:class:`neurocuda.deploy.loihi2.backend.Loihi2Backend`, chosen by ``configs/deploy/*.yaml``.
"""

from neurocuda.deploy.base import Backend, BatchOutput, load_graph
from neurocuda.deploy.evaluate import deploy
from neurocuda.deploy.network import FloatNetwork, GraphCompileError, compile_graph
from neurocuda.deploy.report import DeploymentReport, LayerReport, write_report
from neurocuda.deploy.run import run_deployment

__all__ = [
    "Backend",
    "BatchOutput",
    "DeploymentReport",
    "FloatNetwork",
    "GraphCompileError",
    "LayerReport",
    "compile_graph",
    "deploy",
    "load_graph",
    "run_deployment",
    "write_report",
]
