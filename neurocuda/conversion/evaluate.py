"""Accuracy of a spiking model at several T from one run at max(T), plus spike statistics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from neurocuda.batches import capped, image_count
from neurocuda.metrics.spikes import SpikeMonitor
from neurocuda.progress import progress as show_progress
from neurocuda.snn import Encoding, SpikingModel, encode


@dataclass
class SNNEvaluation:
    """SNN accuracy per T (and the ANN's on the same images) with spike statistics at max(T)."""

    accuracy: dict[int, float]
    ann_accuracy: float | None
    images: int
    spike_rates: dict[str, float] = field(default_factory=dict)
    synops_per_image: float = 0.0
    input_ops_per_image: float = 0.0

    @property
    def gap(self) -> dict[int, float]:
        """ANN accuracy minus SNN accuracy per T (empty without an ANN)."""
        if self.ann_accuracy is None:
            return {}
        return {t: self.ann_accuracy - acc for t, acc in self.accuracy.items()}


@torch.inference_mode()
def evaluate_snn(
    snn: SpikingModel,
    dataloader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    timesteps: Sequence[int],
    ann: nn.Module | None = None,
    encoding: Encoding = "direct",
    max_images: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> SNNEvaluation:
    """Run ``snn`` once at ``max(timesteps)`` per batch; the output trace gives every shorter T.

    ``ann`` (optional) is evaluated on the same images (its training flag is restored).
    ``max_images`` stops after that many images (a validation subset). ``progress`` shows a
    bar on a terminal, periodic lines otherwise (:func:`neurocuda.progress.progress`).
    """
    steps = sorted({int(t) for t in timesteps})
    if not steps or steps[0] < 1:
        raise ValueError(f"timesteps must be positive integers, got {list(timesteps)}.")
    t_max = steps[-1]
    device = next(snn.buffers()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = dict.fromkeys(steps, 0)
    ann_correct, seen = 0, 0
    ann_was_training = ann.training if ann is not None else False
    total = image_count(dataloader, max_images)
    try:
        if ann is not None:
            ann.eval()
        with (
            SpikeMonitor(snn) as monitor,
            show_progress(f"SNN eval T<={t_max}", total, enabled=progress) as advance,
        ):
            for x, y in capped(dataloader, max_images):
                x, y = x.to(device), y.to(device)
                trace = snn(encode(x, t_max, encoding, generator=generator), t_max)
                for t in steps:
                    correct[t] += int((trace[t - 1].argmax(-1) == y).sum())
                if ann is not None:
                    ann_correct += int((ann(x).argmax(-1) == y).sum())
                seen += len(y)
                advance(len(y), status=f"acc@T{t_max} {correct[t_max] / seen:.2%}")
        stats = monitor.stats()
    finally:
        if ann is not None:
            ann.train(ann_was_training)
    if seen == 0:
        raise ValueError("evaluate_snn got no images: the data loader is empty.")
    return SNNEvaluation(
        accuracy={t: correct[t] / seen for t in steps},
        ann_accuracy=ann_correct / seen if ann is not None else None,
        images=seen,
        spike_rates=stats.spike_rates,
        synops_per_image=stats.synops_per_image,
        input_ops_per_image=stats.input_ops_per_image,
    )
