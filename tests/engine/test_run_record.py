"""A run records what it resolved to: method parameters, plug-in preset and every plug-in field."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from beyondkd.bench.runner import check_recorded_config
from beyondkd.bias import config as bias_config_module
from beyondkd.bias import bias_config
from beyondkd.config import load_config
from beyondkd.engine.build import prepare_run, resolved_config, run_training
from beyondkd.errors import BeyondKDError
from tests.conftest import slice_config


def test_resolved_config_writes_out_every_default():
    cfg = load_config(raw={"teacher": {"name": "cnn_small", "checkpoint": "t.pt"}, "student": {"name": "cnn_tiny"},
                           "method": {"bias": {}}})
    res = resolved_config(cfg, "distill")
    assert res.method.name == "kd"
    assert set(res.method.params) == {"temperature", "ce_weight", "kd_weight"}
    assert res.method.bias["preset"] == bias_config_module.DEFAULT_BIAS_PRESET
    fields = dict(res.method.bias)
    preset = fields.pop("preset")
    assert bias_config(preset, **fields) == bias_config()
    assert resolved_config(load_config(raw={"model": {"name": "cnn_tiny"}}), "train-teacher").method.name == "vanilla"


@pytest.fixture(scope="module")
def default_run(fmnist_slice, slice_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("record") / "run"
    raw = slice_config(fmnist_slice, out, slice_teacher, method={"name": "kd", "bias": {}},
                       data={"subset": 512}, train={"epochs": 1})
    cfg = load_config(raw=raw)
    return cfg, run_training(cfg, "distill")


def test_config_yaml_summary_and_checkpoints_record_the_resolved_settings(default_run):
    cfg, result = default_run
    out = result.output_dir
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["method"]["bias"]["preset"] == bias_config_module.DEFAULT_BIAS_PRESET
    assert set(recorded["method"]["bias"]) == {"preset", *bias_config().model_dump()}
    assert recorded["method"]["params"]["temperature"] == 4.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bias"]["preset"] == bias_config_module.DEFAULT_BIAS_PRESET
    assert summary["bias"]["resolved"] == bias_config_module.DEFAULT_BIAS_PRESET
    assert summary["bias"]["settings"] == bias_config().model_dump(mode="json")
    assert summary["params"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=False)
        assert ckpt["record"]["bias"] == summary["bias"]
        assert ckpt["config"]["method"]["bias"] == recorded["method"]["bias"]
    # the recorded config reloads into the very same run
    again = load_config(raw=recorded)
    assert resolved_config(again, "distill").model_dump() == resolved_config(cfg, "distill").model_dump()


def test_moving_the_default_preset_makes_an_old_run_not_reusable(default_run, monkeypatch):
    cfg, result = default_run
    check_recorded_config(result.output_dir, cfg)  # same defaults: reusable
    other = "paper" if bias_config_module.DEFAULT_BIAS_PRESET != "paper" else "constant"
    monkeypatch.setattr(bias_config_module, "DEFAULT_BIAS_PRESET", other)
    with pytest.raises(BeyondKDError, match="holds a run of another config.*method.bias"):
        check_recorded_config(result.output_dir, cfg)


def test_the_teacher_readout_is_exact_with_cached_logits_and_stored_in_the_summary(default_run):
    _, result = default_run
    readout = result.summary["teacher_on_train_rows"]
    assert readout["rows"] == readout["total_rows"] == 512
    assert readout["source"].startswith("cached teacher logits")
    first = result.history[0]
    assert readout["right"] == first["rows_right"]  # the plug-in's own count of epoch 1 agrees
    assert "%" in readout["reading"]


def test_the_teacher_readout_without_a_cache_measures_the_first_batches_as_the_student_sees_them(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "run", slice_teacher, method={"name": "kd"},
                       data={"augment": True, "batch_size": 100}, train={"teacher_readout_rows": 300})
    prepared = prepare_run(load_config(raw=raw), "distill")
    r = prepared.teacher_readout
    assert r is not None and r.rows == 300 and r.total_rows == 2000 and 0 <= r.right <= 300
    assert "measured on 300 of 2,000" in r.reading()
    off = prepare_run(load_config(raw={**raw, "train": {**raw["train"], "teacher_readout_rows": 0}}), "distill")
    assert off.teacher_readout is None


@pytest.mark.parametrize("right, expected", [(90, "wrong on 10.0 %"), (996, "right on 99.6 %")])
def test_the_reading_says_whether_the_plug_in_has_rows_to_act_on(right, expected):
    from beyondkd.engine.teacher_readout import TeacherReadout

    rows = 100 if right == 90 else 1000
    text = TeacherReadout(rows, right, rows, "x").reading()
    assert expected in text
    assert ("has rows to act on" in text) == (right == 90)
