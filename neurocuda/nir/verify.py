"""Compare a NIR graph's execution with the native spiking model on the same inputs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurocuda.nir.executor import Executor
from neurocuda.nir.export import Profile, export
from neurocuda.nir.io import load, save
from neurocuda.snn import Encoding, SpikingModel, encode


@dataclass
class RoundTripReport:
    """Outcome of :func:`compare`: equality of the output traces and accuracy per T."""

    images: int = 0
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    divergent_images: dict[int, int] = field(default_factory=dict)
    """Images whose output trace differs in any value."""
    native_correct: dict[int, int] = field(default_factory=dict)
    nir_correct: dict[int, int] = field(default_factory=dict)

    @property
    def worst_diff(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    @property
    def total_divergent(self) -> int:
        """Images divergent at any T."""
        return max(self.divergent_images.values(), default=0)

    def accuracy(self, which: str = "nir") -> dict[int, float]:
        correct = self.nir_correct if which == "nir" else self.native_correct
        return {t: c / max(1, self.images) for t, c in correct.items()}


@torch.no_grad()
def compare(
    executor: Executor,
    snn: SpikingModel | None,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    timesteps: Sequence[int],
    encoding: Encoding = "direct",
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> RoundTripReport:
    """Run both models once per batch at ``max(timesteps)`` on the same inputs.

    State starts at zero, so the first t steps of the output trace are the run at T = t: every T
    is checked from one run. With ``snn=None`` only the graph's accuracy is measured. Direct
    encoding gives the native model ``[B, ...]`` (constant current) and the executor the same image
    at each step; Poisson spikes are drawn from ``seed``.
    """
    report = RoundTripReport()
    device = next(executor.buffers()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    steps = max(timesteps)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        report.images += len(y)
        inputs = encode(x, steps, encoding, generator=generator)
        out = executor(inputs.expand(steps, *x.shape) if encoding == "direct" else inputs)
        native = None if snn is None else snn(inputs, steps)
        for t in timesteps:
            _add(report.nir_correct, t, int((out[t - 1].argmax(-1) == y).sum()))
            if native is None:
                continue
            diff = (native[:t] - out[:t]).abs().flatten(2)
            report.max_abs_diff[t] = max(report.max_abs_diff.get(t, 0.0), float(diff.max()))
            _add(report.divergent_images, t, int((diff.amax(dim=(0, 2)) != 0).sum()))
            _add(report.native_correct, t, int((native[t - 1].argmax(-1) == y).sum()))
        if on_batch is not None:
            on_batch(len(y))
    return report


def _add(counts: dict[int, int], key: int, value: int) -> None:
    counts[key] = counts.get(key, 0) + value


def export_and_compare(
    snn: SpikingModel,
    paths: Sequence[str | os.PathLike[str]],
    images: torch.Tensor,
    labels: torch.Tensor,
    timesteps: Sequence[int],
    encoding: Encoding = "direct",
    profile: Profile = "faithful",
    metadata: dict[str, Any] | None = None,
) -> tuple[list[Path], RoundTripReport]:
    """Export ``snn`` to every file in ``paths``, read the first back, execute it and
    :func:`compare` it with ``snn`` on ``images`` at ``timesteps``; return the files and report.

    Only the bit-exact profiles (``faithful``, ``portable``) can be compared this way."""
    if profile not in ("faithful", "portable"):
        raise ValueError(
            f"profile={profile!r}: the NIR round trip checks the bit-exact profiles 'faithful' and "
            "'portable'; export the importer profiles with neurocuda.nir.export (docs/interop.md)."
        )
    graph = export(snn, images[:1], profile, metadata)
    written = [save(graph, path) for path in paths]
    executor = Executor(load(written[0])).to(images.device)
    return written, compare(executor, snn, [(images, labels)], timesteps, encoding)
