"""A row's label may not claim elimination, rectification, γ or a preset that its resolved config lacks."""

from __future__ import annotations

import pytest

from beyondkd.bench.labels import label_contradictions
from beyondkd.bias import bias_config


def _problems(label, preset=None, **fields):
    bias = None if preset is None else bias_config(preset, **fields)
    return label_contradictions(label, bias, preset)


@pytest.mark.parametrize("label, preset, fields", [
    ("KD", None, {}),
    ("student (CE)", None, {}),
    ("KD + elimination (EBK)", "eliminate-only", {}),
    ("KD + rectification (RBK)", "rectify-only", {}),
    ("KD + EBK + RBK (paper, γ = e/E)", "paper", {}),
    ("Ours (KD + BTKD, paper preset)", "paper", {}),
    ("KD + plug-in (eliminate-only, our default)", "eliminate-only", {}),
    ("KD + plug-in, custom (constant + rectify_temperature=1.0)", "constant", {"rectify_temperature": 1.0}),
    ("KD + strict", "constant", {"variant": "strict"}),  # built from constant, equal to strict
    ("KD + BTKD (official code)", "official-code", {}),
])
def test_honest_labels_pass(label, preset, fields):
    assert _problems(label, preset, **fields) == []


@pytest.mark.parametrize("label, preset, fields, fragment", [
    ("KD + BTKD (both, default preset)", "eliminate-only", {}, "without naming the preset"),
    ("KD + EBK + RBK (default preset)", "eliminate-only", {}, "claims rectification"),
    ("Ours (KD + BTKD)", "eliminate-only", {}, "'Ours' stands for the paper's method"),
    ("KD + BTKD (both, paper γ = e/E)", "constant", {}, "dynamic γ"),
    ("KD + elimination", "rectify-only", {}, "claims elimination"),
    ("KD", "eliminate-only", {}, "does not say so"),
    ("KD + constant", "paper", {}, "names preset 'constant'"),
])
def test_labels_that_claim_what_the_config_lacks_are_caught(label, preset, fields, fragment):
    problems = _problems(label, preset, **fields)
    assert any(fragment in p for p in problems), problems


def test_a_plug_in_label_on_a_row_without_the_plug_in_is_caught():
    assert any("runs without it" in p for p in _problems("KD + BTKD"))


def test_the_planner_refuses_a_suite_whose_label_claims_what_the_row_lacks(tmp_path):
    import yaml

    from beyondkd.bench.runner import plan_suite
    from beyondkd.bench.suite import parse_suite
    from beyondkd.errors import ConfigError

    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump({"teacher": {"name": "cnn_small", "checkpoint": "t.pt"}, "student": {"name": "cnn_tiny"},
                                   "method": {"name": "kd", "bias": {"preset": "eliminate-only"}}}))
    suite = parse_suite({"name": "t", "groups": [{"name": "g", "rows": [
        {"label": "KD + EBK + RBK (both)", "config": str(cfg)}]}]})
    with pytest.raises(ConfigError, match="row 'KD \\+ EBK \\+ RBK \\(both\\)'.*claims rectification.*rename the row"):
        plan_suite(suite, tmp_path / "out")
