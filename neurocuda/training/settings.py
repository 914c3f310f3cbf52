"""The run's ``data``, ``deploy`` and ``trainer`` settings, checked before anything is built.

:func:`validate_run_settings` runs first in ``train.py``: a wrong type, an out-of-range value or an
unknown key fails at once (before any data is decoded or any epoch trained) with one
:class:`SettingsError` naming the key, the value and what is allowed; so do settings that do not
go together (Poisson input with other normalization or a deployment, an optimized SNN metric at
a T the run does not convert at). The ``conversion`` group is checked the same way by
:class:`~neurocuda.conversion.ConversionConfig`, and the ``finetune`` group with these rules by
:func:`~neurocuda.training.finetune_stage.check_finetune_settings`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from neurocuda.conversion.settings import MAX_TIMESTEPS
from neurocuda.normalization import CIFAR10_MEAN, CIFAR10_STD
from neurocuda.training.instantiate import conversion_group, conversion_settings

CIFAR10_TRAIN_IMAGES = 50_000
"""Training images of CIFAR-10: the validation split is carved from them."""

Rule = Callable[[str, Any], None]
"""Checks ``value`` of setting ``key``; raises :class:`SettingsError`."""


class SettingsError(ValueError):
    """A setting has a wrong type, is out of range or unknown; the message names the key, the
    value and what is allowed."""


def _fail(key: str, value: Any, allowed: str) -> SettingsError:
    return SettingsError(f"{key}={value!r} must be {allowed}.")


def integer(low: int, high: int | None = None, *, optional: bool = False) -> Rule:
    """An integer in ``[low, high]`` (``high`` None: no upper bound); None too if ``optional``."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    allowed += " or null" if optional else ""

    def check(key: str, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, allowed)
        if value < low or (high is not None and value > high):
            raise _fail(key, value, allowed)

    return check


def boolean() -> Rule:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise _fail(key, value, "true or false")

    return check


def auto_or_boolean() -> Rule:
    def check(key: str, value: Any) -> None:
        if value != "auto" and not isinstance(value, bool):
            raise _fail(key, value, "auto, true or false")

    return check


def choice(*allowed: str) -> Rule:
    def check(key: str, value: Any) -> None:
        if value not in allowed:
            raise _fail(key, value, " or ".join(allowed))

    return check


def text(*, optional: bool = False) -> Rule:
    def check(key: str, value: Any) -> None:
        if not (isinstance(value, str) or (value is None and optional)):
            raise _fail(key, value, "a path or name" + (" or null" if optional else ""))

    return check


def number(low: float, high: float | None = None, *, above: bool = False) -> Rule:
    """A finite number >= ``low`` (> ``low`` if ``above``) and <= ``high`` (None: no bound)."""
    allowed = f"a finite number {'>' if above else '>='} {low}"
    allowed += "" if high is None else f" and <= {high}"

    def check(key: str, value: Any) -> None:
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        if not ok or not math.isfinite(value) or value < low or (above and value == low):
            raise _fail(key, value, allowed)
        if high is not None and value > high:
            raise _fail(key, value, allowed)

    return check


def batches() -> Rule:
    """How many batches of an epoch: a count >= 1, a fraction in (0, 1], or null (all)."""
    allowed = "an integer >= 1, a fraction in (0, 1] or null (all)"

    def check(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, value, allowed)
        ok = value >= 1 if isinstance(value, int) else math.isfinite(value) and 0 < value <= 1
        if not ok:
            raise _fail(key, value, allowed)

    return check


def numbers(count: int, *, positive: bool = False) -> Rule:
    """``count`` finite numbers (each > 0 if ``positive``)."""
    allowed = f"a list of {count} finite {'positive ' if positive else ''}numbers"

    def check(key: str, value: Any) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != count:
            raise _fail(key, value, allowed)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _fail(key, value, allowed)
            if positive and v <= 0:
                raise _fail(key, value, allowed)

    return check


def mapping() -> Rule:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _fail(key, value, "a mapping of settings")

    return check


DATA_RULES: dict[str, Rule] = {
    "source": choice("auto", "jpeg", "torchvision"),
    "root": text(),
    "archive": text(optional=True),
    "download": boolean(),
    "cache_dir": text(optional=True),
    "val_size": integer(0, CIFAR10_TRAIN_IMAGES - 1),
    "train_subset": integer(1, optional=True),
    "val_subset": integer(1, optional=True),
    "test_subset": integer(1, optional=True),
    "batch_size": integer(1),
    "eval_batch_size": integer(1, optional=True),
    "num_workers": integer(0),
    "augment": boolean(),
    "cutout": integer(0, 32),
    "mean": numbers(3),
    "std": numbers(3, positive=True),
    "seed": integer(0),
    "shuffle_seed": integer(0, optional=True),
    "on_device": auto_or_boolean(),
}
"""``data`` group: the arguments of :class:`~neurocuda.data.CIFAR10DataModule`."""


def deploy_backend(key: str, value: Any) -> None:
    """A ``Backend`` node: a ``_target_`` and only that class's arguments."""
    if not isinstance(value, Mapping) or "_target_" not in value:
        raise SettingsError(f"{key} must name a Backend class with _target_; got {value!r}.")
    validate_group(key, value, {}, _arguments(value["_target_"]))


DEPLOY_RULES: dict[str, Rule] = {
    "backend": deploy_backend,
    "timesteps": integer(1, MAX_TIMESTEPS),
    "max_images": integer(1, optional=True),
    "calibration_batches": integer(1),
    "callbacks": mapping(),
}
"""``deploy`` group (``configs/deploy/*.yaml``)."""


def accelerator(key: str, value: Any) -> None:
    """``gpu`` / ``cuda`` only where PyTorch sees a CUDA device (Lightning's own message names no
    fix)."""
    if value in ("gpu", "cuda") and not cuda_available():
        raise SettingsError(
            f"{key}={value} but PyTorch sees no CUDA GPU here; use trainer=cpu, or the default "
            "trainer (accelerator auto: the GPU when there is one)."
        )


def cuda_available() -> bool:
    import torch  # here: the other rules need no torch

    return torch.cuda.is_available()


TRAINER_RULES: dict[str, Rule] = {"max_epochs": integer(1), "accelerator": accelerator}
"""``trainer`` group: values checked here; its keys are the Trainer's arguments."""

HYDRA_KEYS = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}


def validate_group(
    group: str, values: Mapping[str, Any], rules: Mapping[str, Rule], known: set[str]
) -> None:
    """Check each value of ``group`` that has a rule, and that every key is in ``known``."""
    check_known(group, values.keys(), known)
    for key, value in values.items():
        if key in rules:
            rules[key](f"{group}.{key}", value)


def check_known(group: str, keys: Iterable[Any], known: Set[str]) -> None:
    """Raise :class:`SettingsError` for the first of ``keys`` not in ``known`` (a typo, or a
    ``+group.key=...`` override that nothing would read)."""
    for key in keys:
        if key not in known | HYDRA_KEYS:
            raise SettingsError(
                f"{group}.{key} is not a setting of the {group} group; known: "
                f"{', '.join(sorted(known))}."
            )


def _arguments(target: str) -> set[str]:
    """The keyword arguments the ``_target_`` class or function takes."""
    parameters = inspect.signature(hydra.utils.get_object(target)).parameters.values()
    return {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}


def validate_run_settings(cfg: DictConfig) -> None:
    """Check the ``data``, ``deploy`` (when selected) and ``trainer`` groups of a run's config."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    validate_group("data", data, DATA_RULES, set(DATA_RULES))
    if cfg.get("deploy"):
        deploy = OmegaConf.to_container(cfg.deploy, resolve=True)
        validate_group("deploy", deploy, DEPLOY_RULES, set(DEPLOY_RULES))
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    validate_group("trainer", trainer, TRAINER_RULES, _arguments(trainer["_target_"]))
    if cfg.get("conversion") and cfg.conversion.get("encoding") == "poisson":
        _check_poisson(data, bool(cfg.get("deploy")))
    _check_optimized_metric(cfg)


_SNN_METRIC = re.compile(r"^(?:snn/acc|test/snn_acc|test/snn_gap|snn/gap)_T(\d+)$")


# what train.py returns (the sweeper's objective): <family>/<name>; the ANN and SNN figures of
# validation and test by their exact names, the other families (logged per layer, per target) by
# the family
_METRIC_NAMES = {
    "val": ("acc", "loss", "acc_best", "snn_loss", "snn_acc_T<t>"),
    "test": ("acc", "loss", "ann_acc_float32", "snn_acc_T<t>", "snn_gap_T<t>"),
}
_METRIC_FAMILIES = ("train", "val", "test", "snn", "nir", "finetune", "deploy", "perf")


def _check_optimized_metric(cfg: DictConfig) -> None:
    """The metric a sweeper optimizes must be one the run logs: a typo (``val/accuracy``), a test
    metric with ``test=false`` or an SNN metric at a T outside ``conversion.timesteps`` failed
    each trial after its whole run."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    family, _, rest = str(name).partition("/")
    if family not in _METRIC_FAMILIES:
        raise SettingsError(
            f"optimized_metric={name}: metrics are named <family>/<name> with family one of "
            f"{', '.join(_METRIC_FAMILIES)} (e.g. val/acc, snn/acc_T4, test/snn_acc_T4)."
        )
    names = _METRIC_NAMES.get(family)
    if names and not any(re.fullmatch(n.replace("<t>", r"\d+"), rest) for n in names):
        raise SettingsError(
            f"optimized_metric={name} is not logged; the {family}/ metrics are "
            f"{', '.join(f'{family}/{n}' for n in names)}."
        )
    if family == "test" and not cfg.get("test", True):
        raise SettingsError(f"optimized_metric={name} is logged by the test; set test=true.")
    match = _SNN_METRIC.match(str(name))
    if match is None:
        return
    steps = conversion_settings(cfg).timesteps if conversion_group(cfg) else ()
    if int(match.group(1)) not in steps:
        raise SettingsError(
            f"optimized_metric={name} is logged at the T's of conversion.timesteps ({list(steps)}"
            f"{'' if steps else ': the conversion group is off'}); add T={match.group(1)} there "
            "or optimize another metric."
        )


SPAWNED_DDP = ("ddp_spawn", "ddp_fork", "ddp_notebook")
"""DDP strategies whose processes are forked or spawned, not started from the command line."""


def check_sweep_launch(cfg: DictConfig, sweeping: bool) -> None:
    """Refuse a sweep (``-m``) whose DDP processes Lightning would start as scripts: it runs the
    command line again (``sys.argv``) for each, so each would run the whole sweep itself (its own
    jobs, an Optuna study of its own). Under SLURM or torchrun the cluster starts the processes."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    trainer = cfg.trainer
    strategy = str(trainer.get("strategy", "auto"))
    if not sweeping or not strategy.startswith("ddp") or strategy.startswith(SPAWNED_DDP):
        return
    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return
    devices = trainer.get("devices", 1)
    if devices in (-1, "-1", "auto"):
        import torch  # here: the other rules need no torch

        devices = torch.cuda.device_count() if cuda_available() else 1
    count = (
        len(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else devices
    )
    processes = int(count) * int(trainer.get("num_nodes", 1))
    if processes > 1:
        raise SettingsError(
            f"A sweep (-m) with trainer.strategy={strategy} on {processes} processes: Lightning "
            "starts the other processes by running this command line again, so each would run "
            "the whole sweep. Run the jobs one by one, set trainer.strategy=ddp_spawn, or sweep "
            "on SLURM (hydra/launcher=slurm; configs/hydra/launcher/slurm.yaml)."
        )


def _check_poisson(data: Mapping[str, Any], deploying: bool) -> None:
    """Poisson spikes are drawn with CIFAR-10's normalization (:mod:`neurocuda.snn.encoding`),
    and the deployments feed the image itself at every step (direct encoding)."""
    norm = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    for key, standard in norm.items():
        value = data.get(key, standard)
        if not all(math.isclose(a, b) for a, b in zip(value, standard, strict=True)):
            raise SettingsError(
                f"conversion.encoding=poisson draws each pixel's spikes from its intensity under "
                f"CIFAR-10's normalization, but data.{key}={list(value)} (CIFAR-10's: "
                f"{list(standard)}); use conversion.encoding=direct or CIFAR-10's data.{key}."
            )
    if deploying:
        raise SettingsError(
            "deploy runs the deployed SNN on the image itself at every step (direct encoding), "
            "so with conversion.encoding=poisson it would be measured on other inputs than the "
            "SNN it is compared with; use conversion.encoding=direct, or leave deploy out."
        )
