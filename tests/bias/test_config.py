"""The plug-in's settings: presets, the name a resolved setting goes by, and the run record."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from beyondkd.bias import BIAS_PRESETS, bias_config, bias_record, describe_bias, resolve_bias
from beyondkd.bias import config as bias_config_module
from beyondkd.errors import ConfigError


@pytest.mark.parametrize("preset", list(BIAS_PRESETS))
def test_every_preset_is_named_by_itself(preset):
    desc = describe_bias(bias_config(preset), preset)
    assert desc.name == preset and desc.label == preset and desc.differs == {}


def test_a_changed_field_makes_a_custom_setting_that_names_the_difference():
    desc = describe_bias(bias_config("paper", variant="strict"), "paper")
    assert desc.name == "custom"
    assert desc.differs == {"variant": "strict"}
    assert desc.label == "custom (paper + variant=strict)"


def test_a_nested_schedule_difference_is_dotted():
    desc = describe_bias(bias_config("paper", schedule={"name": "linear", "cap": 0.5}), "paper")
    assert desc.differs == {"schedule.cap": 0.5}


def test_options_that_are_switched_off_do_not_make_a_setting_custom():
    # no rectification: the variant cannot matter; no dynamic γ: the schedule's shape cannot
    assert describe_bias(bias_config("eliminate-only", variant="strict"), "eliminate-only").name == "eliminate-only"
    assert describe_bias(bias_config("constant", ce_under_gamma=False), "constant").name == "constant"
    assert describe_bias(bias_config("rectify-only", reduction="subbatch"), "rectify-only").name == "rectify-only"


def test_a_setting_built_from_one_preset_that_equals_another_takes_that_name():
    desc = describe_bias(bias_config("constant", variant="strict"), "constant")
    assert desc.name == "strict" and desc.based_on == "constant"


def test_resolve_bias_uses_the_default_preset_at_call_time(monkeypatch):
    assert resolve_bias(None) is None
    cfg, preset = resolve_bias({})
    assert preset == bias_config_module.DEFAULT_BIAS_PRESET
    monkeypatch.setattr(bias_config_module, "DEFAULT_BIAS_PRESET", "paper")
    cfg2, preset2 = resolve_bias({})
    assert preset2 == "paper" and cfg2 == bias_config("paper") and cfg2 != cfg


def test_resolve_bias_errors():
    with pytest.raises(ConfigError, match="unknown bias preset 'papr'.*paper"):
        resolve_bias({"preset": "papr"})
    with pytest.raises(ValidationError):
        resolve_bias({"variant": "nope"})


def test_the_record_holds_every_field_and_reloads_to_the_same_settings():
    cfg = bias_config("official-code", row_weight="wsl")
    rec = bias_record(cfg, "official-code")
    assert rec["preset"] == "official-code" and rec["resolved"] == "custom"
    assert rec["differs"] == {"row_weight": "wsl"}
    assert set(rec["settings"]) == set(type(cfg).model_fields)
    again, _ = resolve_bias({"preset": rec["preset"], **rec["settings"]})
    assert again == cfg
