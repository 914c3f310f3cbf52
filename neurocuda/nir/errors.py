"""The one error type for malformed NIR files and graphs."""

from __future__ import annotations


class NIRFormatError(ValueError):
    """A NIR file or graph is malformed; the message names the file, the node and the field.

    Raised by :func:`neurocuda.nir.load` for every malformed input (unreadable HDF5, wrong node
    types, fields, shapes or dtypes, NaN/Inf parameters, sizes over :class:`LoadLimits`, dangling
    edges, names that collide once nested graphs are inlined) and by the executor for graphs it
    cannot run (shapes that do not fit, cycles without state, ambiguous endpoints).
    """
