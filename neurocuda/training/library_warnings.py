"""Warnings of third-party libraries that a run can do nothing about, filtered by exact message.

Every other warning still shows. Each filter says which library warns and why the fix is not
ours; remove it once that library is fixed.
"""

from __future__ import annotations

import warnings


def filter_library_warnings() -> None:
    """Hide the known third-party warnings below (``train.py`` calls this once at start)."""
    # Lightning 2.6's utilities/_pytree.py still builds torch's LeafSpec, which torch 2.14
    # deprecates (a FutureWarning at every fit); only Lightning can change that code.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    # Lightning's ModelSummary sizes parameters as float32 under bf16-mixed and warns so at every
    # bf16 run; it affects only the printed size estimate, and bf16-mixed is our CPU default.
    warnings.filterwarnings(
        "ignore",
        message="Precision bf16-mixed is not supported by the model summary",
        category=UserWarning,
    )
