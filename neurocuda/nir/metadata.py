"""Settings recorded in a NIR file's metadata, validated before they are used."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

MAX_TIMESTEPS = 4096
"""Largest T accepted from a file or the command line (memory grows linearly with T)."""


def check_timesteps(values: Iterable[Any], source: str) -> list[int]:
    """``values`` as a list of ints in ``1..MAX_TIMESTEPS``; ``ValueError`` naming ``source``."""
    result = []
    for value in values:
        number = float(value) if isinstance(value, int | float | np.number) else None
        if number is None or not number.is_integer() or not 1 <= number <= MAX_TIMESTEPS:
            raise ValueError(
                f"{source}: T = {value!r} is not an integer in 1..{MAX_TIMESTEPS}; give timesteps "
                "such as 1 2 4 8."
            )
        result.append(int(number))
    if not result:
        raise ValueError(f"{source}: no timesteps given; give timesteps such as 1 2 4 8.")
    return result
