"""Suite files: one-line validation errors, planning, dry runs of the packaged suites."""

from __future__ import annotations

import pytest
import yaml

from beyondkd.bench.runner import (
    check_recorded_config, config_exists, detection_entry, is_detection_config, missing_configs, plan_suite,
)
from beyondkd.bench.suite import load_suite, parse_suite, slug, suite_names
from beyondkd.cli.main import main
from beyondkd.config import load_config
from beyondkd.errors import BeyondKDError, ConfigError

ROW = {"label": "KD", "config": "configs/kd.yaml"}


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 400
    return msg


@pytest.mark.parametrize("raw, words", [
    ({"name": "s", "groups": [{"name": "g", "rows": [ROW]}], "colour": 1}, ["unknown key 'colour'"]),
    ({"name": "s", "groups": []}, ["groups"]),
    ({"name": "s", "table": "table9", "groups": [{"name": "g", "rows": [ROW]}]}, ["table"]),
    ({"name": "s", "groups": [{"name": "g", "rows": [ROW, ROW]}]}, ["repeats row label", "KD"]),
    ({"name": "s", "groups": [{"name": "g", "rows": [ROW, {**ROW, "label": "X", "baseline": "KDD"}]}]}, ["baseline 'KDD'", "did you mean 'KD'"]),
    ({"name": "s", "seeds": [1, 1], "groups": [{"name": "g", "rows": [ROW]}]}, ["seeds repeat"]),
    ({"name": "s", "groups": [{"name": "g", "rows": [{"label": "KD"}]}]}, ["missing key", "config"]),
    ({"name": "s", "groups": [{"name": "g", "rows": [{**ROW, "paper": {"acc": 120, "source": "x"}}]}]}, ["paper.acc"]),
    ([1, 2], ["must be a YAML mapping"]),
])
def test_suite_errors_are_one_line(raw, words):
    with pytest.raises(ConfigError) as info:
        parse_suite(raw, "my.yaml")
    msg = _one_line(info.value)
    for w in words:
        assert w in msg


def test_missing_config_is_one_line_naming_it(tmp_path):
    suite = parse_suite({"name": "s", "groups": [{"name": "g", "rows": [ROW, {"label": "DKD", "config": "configs/nope/dkd.yaml"}]}]})
    assert missing_configs(suite) == ["configs/nope/dkd.yaml"]
    with pytest.raises(ConfigError) as info:
        plan_suite(suite, tmp_path)
    msg = _one_line(info.value)
    assert "configs/nope/dkd.yaml" in msg and "row 'DKD'" in msg


def test_optional_row_is_skipped_with_a_note(tmp_path):
    suite = parse_suite({"name": "s", "groups": [{"name": "g", "rows": [ROW, {"label": "DKD", "config": "configs/nope.yaml", "optional": True}]}]})
    plan = plan_suite(suite, tmp_path)
    assert [r.spec.label for r in plan.groups[0].rows] == ["KD"]
    assert plan.groups[0].skipped[0][0] == "DKD"


def test_bad_override_in_a_row_names_the_row(tmp_path):
    suite = parse_suite({"name": "s", "groups": [{"name": "g", "rows": [{**ROW, "overrides": ["method.bias.preset=papr"]}]}]})
    with pytest.raises(ConfigError) as info:
        plan_suite(suite, tmp_path)
    msg = _one_line(info.value)
    assert "row 'KD'" in msg and "papr" in msg


def test_unknown_suite_suggests():
    with pytest.raises(ConfigError) as info:
        load_suite("fmnist-cpuu")
    assert "did you mean 'fmnist-cpu'" in _one_line(info.value)


def test_plan_layout_and_seeds(tmp_path):
    suite = load_suite("fmnist-cpu")
    plan = plan_suite(suite, tmp_path, seeds=[3, 4], overrides=["train.epochs=1"])
    runs = plan.student_runs
    assert {r.seed for r in runs} == {3, 4} and len(runs) == 2 * len(suite.groups[0].rows)
    assert all(r.config.seed == r.seed and r.config.train.epochs == 1 for r in runs)
    assert runs[0].output_dir == tmp_path / slug(suite.groups[0].name) / slug(runs[0].label) / "seed3"
    teacher = plan.teacher_runs[0]
    assert teacher.mode == "train-teacher" and teacher.config.train.epochs == 1
    distilled = [r for r in runs if r.mode == "distill"]
    assert distilled and all(r.config.teacher.checkpoint == str(teacher.output_dir / "best.pt") for r in distilled)
    # the ablation rows really carry the presets
    by_label = {row.spec.label: row for row in plan.groups[0].rows}
    assert (by_label["KD + elimination"].eliminate, by_label["KD + elimination"].rectify) == (True, False)
    assert (by_label["KD + rectification"].eliminate, by_label["KD + rectification"].rectify) == (False, True)
    assert by_label["KD"].eliminate is None


def test_recorded_config_mismatch_is_one_line(tmp_path):
    cfg = load_config("configs/kd.yaml", [f"output_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    check_recorded_config(tmp_path, cfg)  # same run: fine
    check_recorded_config(tmp_path, load_config("configs/kd.yaml", [f"output_dir={tmp_path}", "train.progress_bar=false"]))
    with pytest.raises(BeyondKDError) as info:
        check_recorded_config(tmp_path, load_config("configs/kd.yaml", [f"output_dir={tmp_path}", "train.epochs=7"]))
    msg = _one_line(info.value)
    assert "train.epochs" in msg and "--out" in msg


@pytest.mark.parametrize("name", ["fmnist-cpu", "fmnist-gpu"])
def test_dry_run_of_fmnist_suites(name, tmp_path, capsys):
    assert main(["bench", name, "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "teacher" in out and "KD" in out
    assert not any(tmp_path.iterdir())  # nothing trained or written


PAPER_SUITES = [n for n in suite_names() if not n.startswith("fmnist")]


def test_paper_suites_exist():
    assert {"btkd-table1-cifar100", "btkd-table1-cifar10", "btkd-table2", "btkd-table3", "btkd-table4", "btkd-table5",
            "btkd-table6", "slkd-table2", "slkd-table3", "slkd-table4", "slkd-table5", "slkd-table6"} <= set(PAPER_SUITES)


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_dry_run_of_paper_suites(name, tmp_path, capsys):
    suite = load_suite(name)
    missing = missing_configs(suite)
    if missing:
        pytest.skip(f"{name} references {len(missing)} config(s) not on this branch yet, e.g. {missing[0]}")
    assert main(["bench", name, "--dry-run", "--out", str(tmp_path)]) == 0


def test_list(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in suite_names():
        assert name in out


def _all_rows():
    """(suite, group, label, resolved plug-in settings, their preset) of every packaged row."""
    from beyondkd.bias.config import resolve_bias

    for name in suite_names():
        suite = load_suite(name)
        for g in suite.groups:
            for row in g.rows:
                if not config_exists(row.config):
                    continue
                load = detection_entry()[0] if is_detection_config(row.config) else load_config
                cfg = load(row.config, list(suite.overrides) + g.overrides + row.overrides)
                resolved = resolve_bias(cfg.method.bias)
                yield name, g.name, row.label, *(resolved if resolved is not None else (None, None))


def test_every_packaged_row_label_says_what_its_resolved_config_runs():
    from beyondkd.bench.labels import label_contradictions
    from beyondkd.bias.config import describe_bias, default_bias_preset

    rows = list(_all_rows())
    assert sum(bias is not None for *_, bias, _ in rows) > 50
    for suite, group, label, bias, preset in rows:
        where = f"{suite} / {group} / {label}"
        assert label_contradictions(label, bias, preset) == [], where
        if bias is not None and "default" in label:  # "our default" must name the preset, and be it
            assert f"({default_bias_preset()}, our default)" in label, where
            assert describe_bias(bias, preset).name == default_bias_preset(), where
