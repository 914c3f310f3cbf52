"""NIR export of spiking models, a bit-exact executor for NIR graphs, and file I/O.

``export(snn, sample_input, profile)`` -> ``nir.NIRGraph``; ``save``/``load`` (nir 1.0.8 HDF5;
``load`` raises :class:`NIRFormatError` for malformed files, checked against :class:`LoadLimits`);
``Executor(graph, dt=1.0)`` runs a graph on ``[T, B, ...]`` inputs. Conventions: docs/nir.md.
"""

from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.executor import Executor
from neurocuda.nir.export import Profile, export
from neurocuda.nir.io import load, save
from neurocuda.nir.reader import LoadLimits

__all__ = ["Executor", "LoadLimits", "NIRFormatError", "Profile", "export", "load", "save"]
