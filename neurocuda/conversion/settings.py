"""The one settings object of ANN -> SNN conversion.

``ConversionConfig`` is built once from the ``conversion`` config group (:meth:`from_group`) and
passed whole to the conversion callback, the scripts and the NIR metadata (:meth:`as_metadata` /
:meth:`from_metadata` are the only writer and reader of the file's copy). Its defaults are
``configs/conversion/default.yaml``'s (a test asserts that they agree). Every value is validated
when the object is made, so a bad setting fails before any training or conversion starts, with
the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, get_args

from neurocuda.conversion.errors import ConversionError
from neurocuda.nir.metadata import MAX_TIMESTEPS
from neurocuda.snn import Encoding, ResetMode

# Field -> key in the ``conversion`` config group (the group nests calibration and correction).
_GROUP_KEYS = {
    "timesteps": "timesteps",
    "encoding": "encoding",
    "calibration_batches": "calibration.batches",
    "percentile": "calibration.percentile",
    "per_channel": "calibration.per_channel",
    "reset": "reset",
    "v_init": "v_init",
    "correction_timesteps": "correction.timesteps",
    "correction_batches": "correction.batches",
}


@dataclass
class ConversionConfig:
    """How an ANN becomes an SNN and at which T it is evaluated (the ``conversion`` group)."""

    timesteps: tuple[int, ...] = (1, 2, 4, 8, 16)
    """T values the SNN is evaluated (and its NIR round trip checked) at."""
    encoding: Encoding = "direct"
    calibration_batches: int = 8
    percentile: float = 99.9
    per_channel: bool = True
    reset: ResetMode = "subtract"
    v_init: float = 0.5
    """Initial membrane as a fraction of the threshold (0.5 = theta/2, the low-T default)."""
    correction_timesteps: int = 4
    """T at which initial membranes are corrected per channel (0: off); see correct.py."""
    correction_batches: int = 1
    """Calibration batches the correction runs the SNN on."""
    input_shape: tuple[int, ...] = (3, 32, 32)
    """One sample's shape; set from the data, not a setting of the group."""

    def __post_init__(self) -> None:
        self.timesteps = _timesteps(self.timesteps)
        self.input_shape = tuple(int(s) for s in self.input_shape)
        _choice("encoding", self.encoding, get_args(Encoding))
        _choice("reset", self.reset, get_args(ResetMode))
        _integer("calibration.batches", self.calibration_batches, 1)
        _integer("correction.timesteps", self.correction_timesteps, 0, MAX_TIMESTEPS)
        _integer("correction.batches", self.correction_batches, 1)
        if not isinstance(self.per_channel, bool):
            raise _error("calibration.per_channel", self.per_channel, "true or false")
        _number("calibration.percentile", self.percentile, lambda p: 0 < p <= 100, "(0, 100]")
        _number("v_init", self.v_init, lambda v: 0 <= v <= 1, "[0, 1]")

    @classmethod
    def from_group(cls, group: Mapping[str, Any], **extra: Any) -> ConversionConfig:
        """From the ``conversion`` config group (``cfg.conversion``); ``extra`` sets other fields
        (``input_shape``). Keys the group lacks keep their defaults; a key it should not have
        (a typo in an experiment file) raises :class:`ConversionError` naming it."""
        _check_keys(group)
        values = {}
        for name, key in _GROUP_KEYS.items():
            node: Any = group
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is not None:
                values[name] = _plain(node)
        return cls(**values, **extra)

    def as_group(self) -> dict[str, Any]:
        """The settings as a (nested) ``conversion`` group: the inverse of :meth:`from_group`."""
        group: dict[str, Any] = {}
        for name, key in _GROUP_KEYS.items():
            *parents, leaf = key.split(".")
            node = group
            for part in parents:
                node = node.setdefault(part, {})
            value = getattr(self, name)
            node[leaf] = list(value) if isinstance(value, tuple) else value
        return group

    def as_metadata(self) -> dict[str, str | int | float]:
        """The settings as NIR metadata (HDF5 attributes: booleans as "true"/"false", T values
        comma-joined)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "input_shape"}
        values["timesteps"] = ",".join(map(str, self.timesteps))
        return {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], **overrides: Any) -> ConversionConfig:
        """Inverse of :meth:`as_metadata`, validated like a config; ``overrides`` that are not None
        win, absent keys keep their defaults. A malformed value raises :class:`ConversionError`
        naming the key."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = overrides.get(f.name)
            if value is None:
                value = metadata.get(f.name)
            if value is None or f.name == "input_shape":
                continue
            values[f.name] = _parse(f.name, _plain(value))
        return cls(**values)


def _parse(name: str, value: Any) -> Any:
    """A metadata value (string, number or array from HDF5) as the field's type."""
    default = getattr(ConversionConfig, name)
    try:
        if name == "timesteps":
            if isinstance(value, str):
                return tuple(int(t) for t in value.split(","))
            return value
        if isinstance(default, bool):
            text = str(value).lower()
            if text not in ("true", "false"):
                raise ValueError(value)
            return text == "true"
        if isinstance(default, int):
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError) as error:
        kind = type(default).__name__
        raise _error(_GROUP_KEYS.get(name, name), value, f"a {kind}") from error


_CALLBACK_KEYS = {"every_n_epochs", "eval_subset", "callbacks"}
"""Keys of the ``conversion`` group that its callbacks' settings read, not this class."""


def _check_keys(group: Mapping[str, Any], prefix: str = "") -> None:
    known = set(_GROUP_KEYS.values())
    for key, value in group.items():
        path = f"{prefix}{key}"
        if not prefix and key in _CALLBACK_KEYS:
            continue
        if isinstance(value, Mapping) and any(k.startswith(f"{path}.") for k in known):
            _check_keys(value, f"{path}.")
        elif path not in known:
            raise ConversionError(
                f"conversion.{path} is not a setting of the conversion group; known: "
                f"{', '.join(sorted(known | _CALLBACK_KEYS))}."
            )


def _plain(value: Any) -> Any:
    """OmegaConf / numpy containers and scalars as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _timesteps(value: Any) -> tuple[int, ...]:
    steps = [value] if isinstance(value, int) else value
    allowed = f"a non-empty list of integers in [1, {MAX_TIMESTEPS}], e.g. [1,2,4,8]"
    if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
        raise _error("timesteps", value, allowed)
    for t in steps:
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_TIMESTEPS:
            raise _error("timesteps", value, allowed)
    return tuple(steps)


def _integer(key: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f">= {low} and <= {high}"
        raise _error(key, value, f"{bounds} (an integer)")


def _number(key: str, value: Any, inside: Callable[[float], bool], interval: str) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not inside(value):
        raise _error(key, value, f"a number in {interval}")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _error(key, value, " or ".join(allowed))


def _error(key: str, value: Any, requirement: str) -> ConversionError:
    return ConversionError(f"conversion.{key}={value!r} must be {requirement}.")
