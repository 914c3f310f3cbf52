"""Lightning glue: turn conversion and deployment results into W&B dashboard panels.

Runs after the SNN conversion, NIR round-trip and deployment callbacks (the logger group's
callbacks come last). Scalars (``snn/*``, ``nir/*``, ``deploy/*``) are logged by those callbacks;
this one adds what a dashboard shows better as a chart or table, plus PNG copies in the run dir.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from callbacks.deployment import Deployment
from callbacks.lookup import find_callback
from callbacks.snn_conversion import SNNConversion
from neurocuda.reporting.accuracy_plots import plot_accuracy_vs_t


class WandbDashboard(L.Callback):
    """Accuracy-vs-T line plot + PNG, spike-rate bar chart, best checkpoint, deployment table."""

    def __init__(self, plots_dir: str | None = None) -> None:
        self.plots_dir = plots_dir
        self._logged_epoch: int | None = None

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        """The W&B logger, in the one process that logs (other DDP ranks hold a dummy run)."""
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        conversion = find_callback(trainer, SNNConversion)
        result = conversion.latest if conversion else None
        if logger is None or result is None or result.epoch == self._logged_epoch:
            return
        import wandb

        self._logged_epoch = result.epoch
        png = Path(self.plots_dir or trainer.default_root_dir) / "plots"
        png = png / f"accuracy_vs_T_epoch{result.epoch:03d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_accuracy_vs_t(png, result.ann_accuracy, result.accuracy, title=f"epoch {result.epoch}")
        acc = wandb.Table(
            columns=["T", "SNN accuracy", "ANN accuracy"],
            data=[[t, a, result.ann_accuracy] for t, a in sorted(result.accuracy.items())],
        )
        rates = wandb.Table(
            columns=["layer", "spike rate"],
            data=[[n, r] for n, r in result.evaluation.spike_rates.items()],
        )
        logger.experiment.log(
            {
                "snn/accuracy_vs_T": wandb.plot.line(
                    acc, "T", "SNN accuracy", title="SNN accuracy per T"
                ),
                "snn/accuracy_vs_T_png": wandb.Image(str(png)),
                "snn/spike_rates": wandb.plot.bar(
                    rates, "layer", "spike rate", title="Spike rate per layer"
                ),
                "trainer/global_step": trainer.global_step,
            }
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None:
            return
        import wandb

        # Lightning's log_model refuses offline runs; an artifact logged here is synced later
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            artifact = wandb.Artifact(f"model-{logger.experiment.id}", type="model")
            artifact.add_file(best, name=Path(best).name)
            logger.experiment.log_artifact(artifact, aliases=["best", "latest"])
        deployment = find_callback(trainer, Deployment)
        if deployment is None or deployment.report is None:
            return
        report = deployment.report
        columns = [
            "layer",
            "neurons",
            "spikes/image",
            "spike rate",
            "synops/image",
            "neuron updates/image",
        ]
        rows = [
            [
                r.name,
                r.neurons,
                r.spikes_per_image,
                r.spike_rate,
                r.synops_per_image,
                r.neuron_updates_per_image,
            ]
            for r in report.layers
        ]
        logger.experiment.log({f"deploy/{report.target}/layers": wandb.Table(columns, rows)})
