"""Build callbacks and loggers from Hydra config nodes (lightning-hydra-template style)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from neurocuda.conversion import ConversionConfig
from neurocuda.files import verify_checkpoint
from neurocuda.training.checkpoints import newest_checkpoint, restore_last_checkpoint

log = logging.getLogger(__name__)

# Config groups that may contribute Lightning callbacks under a ``callbacks:`` key, in run order:
# conversion (convert, then NIR round trip) before deployment, and the logger's dashboard last.
CALLBACK_GROUPS = ("callbacks", "conversion", "deploy", "logger")


def _targets(node: DictConfig | None, what: str) -> list[DictConfig]:
    if not node:
        return []
    if not isinstance(node, DictConfig):
        raise TypeError(f"The {what} config must be a mapping of named nodes, got {node!r}.")
    return [n for n in node.values() if isinstance(n, DictConfig) and "_target_" in n]


def conversion_group(cfg: DictConfig) -> DictConfig | None:
    """The run's ``conversion`` group, or None when it is off (``~conversion``).

    An experiment's overrides of single conversion keys (``conversion.eval_subset: 1000``) outlive
    the removed group as a stray node without ``timesteps``: that counts as off too.
    """
    group = cfg.get("conversion")
    return group if group and "timesteps" in group else None


def conversion_settings(cfg: DictConfig) -> ConversionConfig:
    """The run's one conversion settings object, from the ``conversion`` group (validated here,
    before any training starts); the defaults when the group is off."""
    group = conversion_group(cfg)
    return ConversionConfig.from_group(group) if group else ConversionConfig()


def instantiate_callbacks(cfg: DictConfig) -> list[Callback]:
    """Instantiate ``cfg.callbacks.*`` and then ``cfg.<group>.callbacks.*`` for the other groups.

    A callback node with a ``settings`` key receives the run's :func:`conversion_settings`.
    With a fine-tuning stage the ``deploy`` group's callbacks are left to it
    (:func:`group_callbacks`).
    """
    nodes = list(_targets(cfg.get("callbacks"), "callbacks"))
    for group in CALLBACK_GROUPS[1:]:
        if group == "deploy" and cfg.get("finetune"):
            continue  # the fine-tuning stage deploys its SNN (run_finetune), not the ANN's
        group_cfg = conversion_group(cfg) if group == "conversion" else cfg.get(group)
        if group_cfg:
            nodes += _targets(group_cfg.get("callbacks"), f"{group}.callbacks")
    settings = conversion_settings(cfg)
    callbacks = []
    for node in nodes:
        log.info("Instantiating callback <%s>", node._target_)
        if "settings" in node:  # passed after instantiate: Hydra would turn it into a DictConfig
            callbacks.append(hydra.utils.instantiate(node, _partial_=True)(settings=settings))
        else:
            callbacks.append(hydra.utils.instantiate(node))
    return callbacks


def group_callbacks(cfg: DictConfig, group: str) -> list[Callback]:
    """The callbacks of config group ``group`` (``cfg.<group>.callbacks``; none without it)."""
    node = cfg.get(group)
    nodes = _targets(node.get("callbacks") if node else None, f"{group}.callbacks")
    return [hydra.utils.instantiate(n) for n in nodes]


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every logger node in ``cfg.logger`` (empty for ``logger=none``).

    With ``resume=true`` a W&B logger continues the killed run's W&B run (its id, found in the run
    directory) instead of opening a second one.
    """
    loggers = []
    for node in _targets(cfg.get("logger"), "logger"):
        wandb_node = issubclass(hydra.utils.get_class(node._target_), WandbLogger)
        if wandb_node and os.environ.get("WANDB_MODE") == "disabled":
            log.info("WANDB_MODE=disabled: no W&B logger.")  # Lightning's offline=true overrode it
            continue
        log.info("Instantiating logger <%s>", node._target_)
        extra = {}
        if cfg.get("resume") and not node.get("id") and wandb_node:
            run_id = wandb_run_id(Path(node.get("save_dir") or cfg.paths.output_dir) / "wandb")
            if run_id:
                log.info("Resuming W&B run %s", run_id)
                extra = {"id": run_id, "resume": "allow"}
        loggers.append(hydra.utils.instantiate(node, **extra))
    return loggers


def wandb_run_id(directory: Path) -> str | None:
    """The id of the newest W&B run in ``directory`` (``[offline-]run-<time>-<id>`` folders); None
    when it holds none. Offline, each resumed process writes a folder of the same id: ``wandb sync``
    uploads them in start order into that one run."""
    runs = sorted(directory.glob("*run-*-*"), key=lambda d: d.name.split("run-", 1)[1])
    return runs[-1].name.rsplit("-", 1)[1] if runs else None


def finish_loggers(loggers: list[Logger], failed: bool) -> None:
    """Close W&B runs so each job of a sweep gets its own, complete run directory; a ``failed``
    run is recorded as failed (exit code 1), not as finished.

    ``teardown`` stops W&B's service process, which is what flushes an offline run's log to disk.
    """
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    for logger in wandb_loggers:
        logger.experiment.finish(exit_code=int(failed))
    if wandb_loggers:
        import wandb

        wandb.teardown()
        # Lightning's offline=true set WANDB_MODE=dryrun for the process: the next job of a
        # sweep (logger.wandb.offline=false) would run offline too
        if os.environ.get("WANDB_MODE") == "dryrun":
            del os.environ["WANDB_MODE"]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` if set; with ``resume=true`` the run's newest complete checkpoint."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={path} does not exist.")
        return str(verify_checkpoint(path))  # a damaged file fails here, before any training
    if cfg.get("resume"):
        directory = Path(cfg.paths.output_dir) / "checkpoints"
        newest = resume_checkpoint(directory)
        if newest is None:
            raise FileNotFoundError(
                f"resume=true but {directory} holds no complete checkpoint: point hydra.run.dir at "
                "the killed run's directory (python train.py hydra.run.dir=RUN_DIR resume=true), "
                "or start a new run from a checkpoint without resume (ckpt_path=FILE.ckpt)."
            )
        return newest
    return None


def resume_checkpoint(directory: Path) -> str | None:
    """The newest complete checkpoint in ``directory`` to resume from (``last.ckpt`` made to hold
    it again, see :func:`restore_last_checkpoint`); None when it holds none."""
    newest = newest_checkpoint(directory)
    if newest is None:
        return None
    log.info("Resuming from %s", newest)
    return str(restore_last_checkpoint(newest))
