"""Table math on run folders written by the test: mean ± sample std of best and last epochs, Δ, paper Δ."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.bench.runner import plan_suite
from beyondkd.bench.suite import parse_suite
from beyondkd.bench.tables import aggregate, build_table, read_run, render_markdown, write_table

from tests.bench.helpers import write_run

accs = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(accs, min_size=1, max_size=8))
def test_aggregate_is_mean_and_sample_std(values):
    agg = aggregate(values)
    assert agg.n == len(values)
    assert agg.mean == pytest.approx(float(np.mean(values)), abs=1e-9)
    assert min(values) - 1e-9 <= agg.mean <= max(values) + 1e-9
    if len(values) == 1:
        assert agg.std is None and agg.format() == f"{values[0]:.2f}"
    else:
        assert agg.std == pytest.approx(float(np.std(values, ddof=1)), abs=1e-7)
        assert "±" in agg.format()


def test_aggregate_empty():
    agg = aggregate([])
    assert agg.n == 0 and agg.mean is None and agg.format() == "—"


@settings(max_examples=40, deadline=None)
@given(st.lists(accs, min_size=1, max_size=10))
def test_read_run_best_is_first_maximum_and_last_is_final_epoch(tmp_path_factory, values):
    d = write_run(tmp_path_factory.mktemp("run") / "r", values, teacher_acc=90.0)
    res = read_run(d)
    assert res.best_acc == max(values)
    assert res.best_epoch == values.index(max(values)) + 1
    assert res.last_acc == values[-1]
    assert res.teacher_acc == 90.0 and res.finished and res.epochs == len(values)


def test_read_run_without_evaluated_epoch(tmp_path):
    assert read_run(tmp_path) is None


def _suite(tmp_path):
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "kd", "data": {"root": str(tmp_path)}, "teacher": {"name": "cnn_small", "checkpoint": "t.pt"},
        "student": {"name": "cnn_tiny"}, "method": {"name": "kd"}, "train": {"epochs": 3}}))
    return parse_suite({
        "name": "t", "table": "ablation", "source": "test", "seeds": [0, 1, 2],
        "groups": [{"name": "pair", "rows": [
            {"label": "KD", "config": str(cfg), "paper": {"acc": 70.0, "source": "T1"}},
            {"label": "KD + BTKD", "config": str(cfg), "overrides": ["method.bias.preset=eliminate-only"],
             "baseline": "KD", "paper": {"acc": 75.5, "source": "T1"}},
        ]}]})


def test_table_from_run_dirs(tmp_path):
    plan = plan_suite(_suite(tmp_path), tmp_path / "out")
    kd, ours = plan.groups[0].rows
    # KD: best/last per seed (80, 79), (82, 82), (81, 78)
    for run, accs_ in zip(kd.runs, ([70.0, 80.0, 79.0], [75.0, 81.0, 82.0], [81.0, 80.0, 78.0])):
        write_run(run.output_dir, accs_, teacher_acc=85.0, config=run.config.model_dump(mode="json"))
    # ours: two finished seeds, the third still running (must not count)
    write_run(ours.runs[0].output_dir, [84.0, 83.0, 83.5], teacher_acc=85.0)
    write_run(ours.runs[1].output_dir, [82.0, 86.0, 85.0], teacher_acc=85.0)
    write_run(ours.runs[2].output_dir, [99.0], teacher_acc=85.0, finished=False)
    table = build_table(plan)
    g = table["groups"][0]
    r_kd, r_ours = g["rows"]
    assert r_kd["best"]["mean"] == pytest.approx(81.0) and r_kd["best"]["std"] == pytest.approx(1.0)
    assert r_kd["last"]["mean"] == pytest.approx(statistics.fmean([79, 82, 78]))
    assert r_kd["last"]["std"] == pytest.approx(statistics.stdev([79, 82, 78]))
    assert r_kd["best_epoch"]["mean"] == pytest.approx(statistics.fmean([2, 3, 1]))
    assert r_ours["best"]["n"] == 2 and r_ours["best"]["mean"] == pytest.approx(85.0)
    assert r_ours["best"]["std"] == pytest.approx(math.sqrt(2.0))
    assert r_ours["last"]["mean"] == pytest.approx(84.25)
    assert r_ours["delta_best"] == pytest.approx(4.0)
    assert r_ours["paper_delta"] == pytest.approx(5.5)
    # the plug-in switches come from the resolved config, not the suite file
    assert (r_kd["eliminate"], r_kd["rectify"]) == (None, None)
    assert (r_ours["eliminate"], r_ours["rectify"]) == (True, False)
    # teacher as measured by the student runs
    assert g["teacher"]["best"]["mean"] == pytest.approx(85.0)
    # the plug-in column names the resolved preset
    assert (r_kd["plugin"], r_ours["plugin"]) == (None, "eliminate-only")
    # epochs to 99 % of KD's final mean (79.67 -> 78.87): KD seeds reach it at epochs 2, 2, 1; ours at 1, 1
    assert g["target"]["accuracy"] == pytest.approx(0.99 * statistics.fmean([79, 82, 78]))
    assert r_kd["epochs_to_target"]["mean"] == pytest.approx(5 / 3) and r_kd["epochs_to_target"]["reached"] == 3
    assert r_ours["epochs_to_target"]["mean"] == pytest.approx(1.0) and r_ours["epochs_to_target"]["reached"] == 2
    md = render_markdown(table)
    assert "| KD | — | ✗ | ✗ | 81.00 ± 1.00 | 79.67 ± 2.08 | 3/3 | — | — | 70.00 | — | 1.67 ± 0.58 |" in md
    assert "| KD + BTKD | eliminate-only | ✓ | ✗ | 85.00 ± 1.41 | 84.25 ± 1.06 | 2/3 | +4.00 | KD | 75.50 | +5.50 | 1.00 ± 0.00 |" in md
    _, md_path, json_path = write_table(plan)
    assert md_path.read_text() == md and json_path.is_file()


def test_best_of_several_baselines(tmp_path):
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump({"teacher": {"name": "cnn_small", "checkpoint": "t.pt"}, "student": {"name": "cnn_tiny"}}))
    suite = parse_suite({"name": "t", "seeds": [0], "groups": [{"name": "g", "rows": [
        {"label": "A", "config": str(cfg)}, {"label": "B", "config": str(cfg)},
        {"label": "C", "config": str(cfg), "baseline": ["A", "B"]}]}]})
    plan = plan_suite(suite, tmp_path / "out")
    for row, acc in zip(plan.groups[0].rows, (70.0, 72.5, 74.0)):
        write_run(row.runs[0].output_dir, [acc])
    rows = build_table(plan)["groups"][0]["rows"]
    assert rows[2]["delta_best"] == pytest.approx(1.5)
    assert rows[0]["delta_best"] is None


def test_tables_only_reads_existing_run_dirs(tmp_path, capsys):
    from beyondkd.cli.main import main

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(_suite(tmp_path).model_dump(mode="json"), allow_unicode=True))
    plan = plan_suite(_suite(tmp_path), tmp_path / "out", seeds=[0, 1])
    for row, vals in zip(plan.groups[0].rows, ([70.0, 72.0], [74.0, 73.0])):
        for run, shift in zip(row.runs, (0.0, 2.0)):
            write_run(run.output_dir, [v + shift for v in vals], config=run.config.model_dump(mode="json"))
    assert main(["bench", str(suite_file), "--tables-only", "--seeds", "0,1", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| KD + BTKD | eliminate-only | ✓ | ✗ | 75.00 ± 1.41 | 74.00 ± 1.41 | 2/2 | +2.00 | KD | 75.50 | +5.50 | 1.00 ± 0.00 |" in out
    assert (tmp_path / "out" / "pair" / "accuracy.png").is_file()
