"""The one conversion settings object: the YAML's defaults, one source for every consumer, and
bad values refused at once with the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from neurocuda.checkpoint import settings_with_overrides
from neurocuda.conversion import ConversionConfig, ConversionError
from neurocuda.training.compose import compose_train_config
from neurocuda.training.instantiate import instantiate_callbacks
from tests.conftest import ROOT


def test_defaults_are_the_yaml_defaults() -> None:
    group = OmegaConf.load(ROOT / "configs" / "conversion" / "default.yaml")
    assert ConversionConfig.from_group(group) == ConversionConfig()
    assert ConversionConfig().per_channel is True  # was False in the dataclass: a silent bug
    assert ConversionConfig.from_group(ConversionConfig().as_group()) == ConversionConfig()


@pytest.mark.parametrize(
    ("group", "key"),
    [
        ({"reset": "zero", "vinit": 0.3}, "vinit"),
        ({"calibration": {"percentle": 50}}, "calibration.percentle"),
    ],
)
def test_an_unknown_key_of_the_group_is_named(group: dict, key: str) -> None:
    with pytest.raises(
        ConversionError, match=rf"conversion\.{key} is not a setting .* known: .*v_init"
    ):
        ConversionConfig.from_group(group)
    ConversionConfig.from_group({"every_n_epochs": 3, "eval_subset": None, "callbacks": {}})


def test_the_callback_gets_the_group_as_one_object(tmp_path: Path) -> None:
    overrides = ["conversion.timesteps=[2,6]", "conversion.calibration.per_channel=false",
                 "conversion.encoding=poisson", "conversion.correction.timesteps=0"]  # fmt: skip
    cfg = compose_train_config(overrides, tmp_path)
    conversion = next(cb for cb in instantiate_callbacks(cfg) if hasattr(cb, "settings"))
    assert type(conversion.settings) is ConversionConfig
    assert conversion.settings == ConversionConfig(
        timesteps=(2, 6), per_channel=False, encoding="poisson", correction_timesteps=0
    )


def test_metadata_round_trip_and_overrides(tmp_path: Path) -> None:
    settings = ConversionConfig(timesteps=(4, 8), v_init=0.25, reset="zero")
    metadata = settings.as_metadata()
    assert metadata["timesteps"] == "4,8" and metadata["per_channel"] == "true"
    assert ConversionConfig.from_metadata(metadata) == settings
    overrides = ["conversion.v_init=0.5", "conversion.calibration.batches=2"]
    cfg = compose_train_config(overrides, tmp_path)
    changed = settings_with_overrides(settings, cfg, overrides)
    assert changed.v_init == 0.5 and changed.calibration_batches == 2
    assert changed.reset == "zero" and changed.timesteps == (4, 8)  # the rest from the file


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("conversion.timesteps=[1.5]", r"conversion\.timesteps=\[1\.5\] must be a non-empty list"),
        ("conversion.timesteps=[0,4]", r"conversion\.timesteps=\[0, 4\] must be"),
        ("conversion.timesteps=[]", r"conversion\.timesteps=\[\] must be"),
        ("conversion.v_init=nan", r"conversion\.v_init=nan must be a number in \[0, 1\]"),
        ("conversion.calibration.percentile=150", r"percentile=150 must be a number in \(0, 100\]"),
        ("conversion.calibration.batches=0", r"batches=0 must be >= 1"),
        ("conversion.reset=hard", r"conversion\.reset='hard' must be subtract or zero"),
        ("conversion.encoding=rate", r"conversion\.encoding='rate' must be direct or poisson"),
        ("conversion.calibration.per_channel=2", r"per_channel=2 must be true or false"),
    ],
)
def test_bad_settings_fail_before_training(override: str, message: str, tmp_path: Path) -> None:
    cfg = compose_train_config([override], tmp_path)
    with pytest.raises(ConversionError, match=message):
        instantiate_callbacks(cfg)


@pytest.mark.parametrize(
    "metadata",
    [
        {"timesteps": "0"},
        {"timesteps": "100000"},
        {"timesteps": "4,x"},
        {"v_init": "inf"},
        {"per_channel": "maybe"},
        {"correction_timesteps": "2.5"},
    ],
)
def test_bad_metadata_is_refused(metadata: dict) -> None:
    with pytest.raises(ConversionError, match="conversion"):
        ConversionConfig.from_metadata(metadata)
