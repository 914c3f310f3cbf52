"""Settings recorded in a NIR file's metadata, validated before they are used."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch

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


OutputForm = Literal["integrated", "per_step"]
ResetConvention = Literal["nir", "subtract", "spikingjelly", "snntorch", "sinabs"]
RESET_CONVENTIONS: tuple[str, ...] = ("nir", "subtract", "spikingjelly", "snntorch", "sinabs")


@dataclasses.dataclass(frozen=True)
class InputSignature:
    """How to feed a graph and read its output, recorded in its metadata (portable profiles).

    - ``extra_channels``: indicator channels appended after the image channels; they are 1 during
      the first ``indicator_steps`` steps and 0 afterwards (they carry the initial membrane).
    - ``drop_steps``: leading output steps that belong to no image (0 for our profiles).
    - ``output``: ``integrated`` (the output is the running sum ``o_t``) or ``per_step`` (the
      output layer's current ``y_t``; sum it over time for ``o_t``).
    - ``dt``: the time step to run the graph with.
    - ``reset_convention``: how spiking neurons fire and reset, the ``convention`` of
      ``Executor(graph, convention=...)``: ``nir`` (reset to ``v_reset``, NIR's semantics),
      ``subtract`` (subtract ``v_threshold``), ``spikingjelly`` (spike on ``v >= v_threshold``),
      ``snntorch`` (snnTorch's ``Leaky`` for ``LIF`` nodes, subtraction one step later) or
      ``sinabs`` (sinabs' ``IAF`` as its NIR import builds it, several spikes per step); see
      :class:`neurocuda.nir.primitives.SpikingMixin`.
    """

    extra_channels: int = 0
    indicator_steps: int = 0
    drop_steps: int = 0
    output: OutputForm = "integrated"
    dt: float = 1.0
    reset_convention: ResetConvention = "nir"

    def __post_init__(self) -> None:
        counts = (self.extra_channels, self.indicator_steps, self.drop_steps)
        if any(not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError(f"input signature counts {counts} must be integers >= 0.")
        if self.output not in ("integrated", "per_step"):
            raise ValueError(f"output={self.output!r}: use 'integrated' or 'per_step'.")
        if not (isinstance(self.dt, float) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt={self.dt!r} must be a positive float.")
        if self.reset_convention not in RESET_CONVENTIONS:
            raise ValueError(
                f"reset_convention={self.reset_convention!r}: use one of {RESET_CONVENTIONS}."
            )

    def to_metadata(self) -> dict[str, Any]:
        return {f"{_SIGNATURE}{k}": v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> InputSignature:
        """The signature a graph's metadata records (the defaults where it records none)."""
        values = {}
        for item in dataclasses.fields(cls):
            value = metadata.get(f"{_SIGNATURE}{item.name}", item.default)
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic | np.ndarray):
                value = value.item()
            values[item.name] = float(value) if item.name == "dt" else value
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"the graph's metadata has an invalid input signature: {error}"
            ) from None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[T, B, C, ...]`` with the indicator channels appended (1 while t < steps)."""
        if not self.extra_channels:
            return x
        shape = (x.shape[0], x.shape[1], self.extra_channels, *x.shape[3:])
        indicator = torch.zeros(shape, dtype=x.dtype, device=x.device)
        indicator[: self.indicator_steps] = 1
        return torch.cat([x, indicator], dim=2)

    def integrate(self, y: torch.Tensor) -> torch.Tensor:
        """The output as the running sum ``o_t`` ``[T, B, ...]``, leading steps dropped."""
        y = y[self.drop_steps :]
        return y.cumsum(0) if self.output == "per_step" else y


_SIGNATURE = "signature_"
