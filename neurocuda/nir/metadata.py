"""Settings recorded in a NIR file's metadata, validated before they are used."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from neurocuda.nir.errors import NIRFormatError

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


def recorded_timesteps(metadata: Mapping[str, Any], default: str = "1,2,4,8") -> list[int]:
    """The ``timesteps`` a file's metadata records (``"1,2,4"`` or numbers), validated."""
    value = metadata.get("timesteps", default)
    if isinstance(value, bytes | str):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        items: list[Any] = []
        for item in text.split(","):
            try:
                items.append(int(item.strip()))
            except ValueError:
                items.append(item.strip())
    else:
        items = np.atleast_1d(np.asarray(value)).tolist()
    try:
        return check_timesteps(items, f"metadata 'timesteps' = {value!r}")
    except ValueError as error:
        raise NIRFormatError(f"{error} (or override them with --timesteps)") from None
