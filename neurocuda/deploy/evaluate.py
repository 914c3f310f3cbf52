"""Run a prepared backend over a data loader and assemble the deployment report."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torchmetrics.classification import MulticlassAccuracy

from neurocuda.batches import capped, image_count
from neurocuda.deploy.base import Backend
from neurocuda.deploy.report import DeploymentReport, LayerReport
from neurocuda.metrics.energy import estimate_energy
from neurocuda.progress import progress as show_progress


def _ann_macs_by_layer(backend: Backend) -> dict[str, int]:
    """ANN MACs of each weight node, keyed by the layer name of the population whose output it
    reads: the same connections as that population's synops (its spikes times their fan-out),
    so each layer's row compares one set of synapses in both networks."""
    net = backend.network
    labels = {pop.name: pop.label or pop.name for pop in net.populations}
    macs: dict[str, int] = {}
    for proj in net.projections:
        if proj.label in net.macs:
            layer = labels.get(proj.source, proj.source)  # or the graph's input
            macs[layer] = macs.get(layer, 0) + net.macs[proj.label]
    return macs


MAX_SAMPLE_STEPS = 2048
"""At most this many images x timesteps per backend run, whatever the loader's batch size: bounds
every backend's memory (a 256-image batch at T=32 once took 18 GB in the float executor) and keeps
the progress bar moving."""


def deploy(
    backend: Backend,
    batches: Iterable,
    timesteps: int,
    num_classes: int = 10,
    max_images: int | None = None,
    progress: bool = True,
    source: str = "",
) -> DeploymentReport:
    """Run ``backend`` (already prepared) on ``(x, y)`` batches; stop after ``max_images``."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}.")
    # one process deploys its own images: no all-gather across DDP processes (rank 0 runs it)
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro", sync_on_compute=False)
    spikes: dict[str, int] = {}
    synops: dict[str, int] = {}
    updates: dict[str, int] = {}
    extra: dict[str, int] = {}
    images, steps_run, seconds = 0, timesteps, 0.0
    per_run = max(1, MAX_SAMPLE_STEPS // timesteps)
    description = f"deploy[{backend.name}] T={timesteps}"
    with show_progress(description, image_count(batches, max_images), enabled=progress) as advance:
        for x, y in capped(batches, max_images):
            for x_part, y_part in zip(x.split(per_run), y.split(per_run), strict=True):
                start = time.perf_counter()
                out = backend.run(x_part, timesteps)
                seconds += time.perf_counter() - start
                accuracy.update(out.logits.argmax(dim=1), y_part.cpu())
                for target, source_counts in (
                    (spikes, out.spikes),
                    (synops, out.synops),
                    (updates, out.neuron_updates),
                    (extra, out.extra),
                ):
                    for k, v in source_counts.items():
                        target[k] = target.get(k, 0) + v
                images += x_part.shape[0]
                steps_run = out.steps_run
                advance(x_part.shape[0], status=f"acc {float(accuracy.compute()):.2%}")
    if images == 0:
        raise ValueError("deploy got no images; check the data loader / deploy.max_images.")
    layers = []
    for pop in backend.network.populations:
        neurons = int(torch.Size(pop.shape).numel())
        per_image = spikes.get(pop.name, 0) / images
        layers.append(
            LayerReport(
                name=pop.label or pop.name,  # as the model names it (layers.0.act1)
                neurons=neurons,
                spikes_per_image=per_image,
                # over the steps the target ran (lava mode: T + depth, counted in all columns)
                spike_rate=per_image / (neurons * steps_run),
                synops_per_image=synops.get(pop.name, 0) / images,
                neuron_updates_per_image=updates.get(pop.name, 0) / images,
            )
        )
    energy = estimate_energy(
        {row.name: row.synops_per_image for row in layers},
        {row.name: row.neuron_updates_per_image for row in layers},
        _ann_macs_by_layer(backend),
    )
    return DeploymentReport(
        target=backend.name,
        timesteps=timesteps,
        images=images,
        accuracy=float(accuracy.compute()),
        latency_timesteps=steps_run,
        throughput_images_per_s=images / seconds if seconds else float("inf"),
        wall_seconds=seconds,
        layers=layers,
        energy=energy.as_dict(),
        target_info=backend.describe(),
        saturation=extra,
        source=source,
    )
