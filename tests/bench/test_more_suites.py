"""BTKD Tables 2-4 and SLKD Tables 3, 5, 6: top-5 and detection columns, detection rows, the suites' structure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from beyondkd.bench.runner import plan_suite
from beyondkd.bench.suite import load_suite, parse_suite
from beyondkd.bench.tables import build_table, read_run, render_markdown
from beyondkd.cli.main import main
from beyondkd.config import load_config
from beyondkd.detection.config import load_detection_config
from beyondkd.distillers.feature_base import FeatureDistiller
from tests.bench.helpers import write_run
from tests.detection.tiny_coco import make_tiny_coco, tiny_model, tiny_run


def _kd_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump({"name": "kd", "data": {"root": str(tmp_path)}, "teacher": {"name": "cnn_small", "checkpoint": "t.pt"},
                                   "student": {"name": "cnn_tiny"}, "method": {"name": "kd"}}))
    return cfg


def test_imagenet_shape_prints_top5_at_each_seeds_best_epoch_beside_the_papers(tmp_path):
    cfg = _kd_config(tmp_path)
    suite = parse_suite({"name": "in", "table": "imagenet", "seeds": [0, 1], "groups": [{"name": "g", "rows": [
        {"label": "KD", "config": str(cfg), "paper": {"acc": 71.03, "top5": 90.05, "source": "BTKD Table 2"}}]}]})
    plan = plan_suite(suite, tmp_path / "out")
    for run, accs in zip(plan.groups[0].rows[0].runs, ([60.0, 70.0, 65.0], [50.0, 52.0, 51.0])):
        write_run(run.output_dir, accs)
        metrics = run.output_dir / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        for r in records:
            r["val_top5"] = r["val_acc"] + 20.0  # top-5 of the best epoch: 90 and 72
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = build_table(plan)
    row = table["groups"][0]["rows"][0]
    assert row["at_best"]["val_top5"]["mean"] == pytest.approx(81.0) and row["at_best"]["val_top5"]["n"] == 2
    md = render_markdown(table)
    assert "| method | plug-in | best | last | top-5 | seeds | Δ | vs | paper | paper top-5 | paper Δ | to 99 % |" in md
    assert "| KD | — | 61.00 ± 12.73 | 58.00 ± 9.90 | 81.00 ± 12.73 | 2/2 | — | — | 71.03 | 90.05 | — | 1.00 (1/2) |" in md


def _detection_run(run_dir: Path, aps: list[tuple[float, float, float]], teacher_ap: float | None = 0.42) -> Path:
    """A run folder as ``beyondkd detect`` writes it: epochs counted from 0, AP as fractions."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"epoch": e, "train_loss": 1.0, "AP": a, "AP50": b, "AP75": c, "APs": -1.0, "APm": -1.0, "APl": -1.0}
             for e, (a, b, c) in enumerate(aps)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"name": "d", "mode": "distill", "best_epoch": 1}
    if teacher_ap is not None:
        summary["teacher_AP"] = teacher_ap
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_a_detection_run_reads_as_box_ap_in_percent_with_ap50_ap75_of_its_best_epoch(tmp_path):
    res = read_run(_detection_run(tmp_path / "r", [(0.20, 0.40, 0.21), (0.31, 0.52, 0.33), (0.30, 0.55, 0.32)]))
    assert res.best_acc == pytest.approx(31.0) and res.best_epoch == 2 and res.last_acc == pytest.approx(30.0)
    assert res.at_best == pytest.approx({"AP50": 52.0, "AP75": 33.0})
    assert res.teacher_acc == pytest.approx(42.0) and res.finished


# -- detection rows trained by the bench -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> dict[str, str]:
    return make_tiny_coco(tmp_path_factory.mktemp("tiny_coco"))


def _write(path: Path, raw: dict) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_bench_trains_detection_rows_with_the_detection_trainer_and_prints_ap_columns(tiny_coco, tmp_path, capsys):
    steps = {"max_steps_per_epoch": 1}
    teacher = _write(tmp_path / "teacher.yaml", tiny_run(tiny_coco, tmp_path / "unused", model=tiny_model(), train=steps))
    ce = _write(tmp_path / "ce.yaml", tiny_run(tiny_coco, tmp_path / "unused", model=tiny_model(), train=steps))
    kd = _write(tmp_path / "kd.yaml", tiny_run(tiny_coco, tmp_path / "unused", student=tiny_model(),
                                               teacher=tiny_model(checkpoint="set-by-the-bench.pt"),
                                               train={**steps, "eval_teacher": False}))
    suite = _write(tmp_path / "det.yaml", {
        "name": "det", "table": "detection", "seeds": [0], "groups": [{"name": "r18 -> r18", "teacher": {"config": teacher}, "rows": [
            {"label": "student (CE)", "config": ce},
            {"label": "KD", "config": kd, "paper": {"acc": 33.97, "ap50": 54.66, "ap75": 36.62, "source": "BTKD Table 4"}},
            {"label": "KD + BTKD (paper preset)", "config": kd, "overrides": ["method.bias.preset=paper"], "baseline": "KD"},
        ]}]})
    out = tmp_path / "out"
    assert main(["bench", suite, "--dry-run", "--out", str(out)]) == 0
    assert "(distill)" in capsys.readouterr().out and not out.exists()
    assert main(["bench", suite, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| method | plug-in | best | last | AP50 | AP75 | seeds | Δ | vs | paper | paper AP50 | paper AP75 | paper Δ | to 99 % |" in text
    assert "COCO box AP" in text and "| 33.97 | 54.66 | 36.62 |" in text
    table = json.loads((out / "table.json").read_text())
    group = table["groups"][0]
    assert group["teacher"]["best"]["n"] == 1  # trained by the suite, with the detection trainer
    for row in group["rows"]:
        assert row["best"]["n"] == 1 and 0.0 <= row["best"]["mean"] <= 100.0
        assert set(row["at_best"]) == {"AP50", "AP75"}
    ours = out / "r18-r18" / "kd-plus-btkd-paper-preset" / "seed0"
    recorded = yaml.safe_load((ours / "config.yaml").read_text())
    assert recorded["method"]["bias"]["preset"] == "paper"  # resolved: the preset and every field
    assert recorded["method"]["bias"]["schedule"]["name"] == "linear" and len(recorded["method"]["bias"]) > 5
    assert recorded["teacher"]["checkpoint"] == str(out / "teachers" / "teacher" / "best.pt")
    assert "teacher_roi_acc" in json.loads((ours / "metrics.jsonl").read_text().splitlines()[-1])
    # finished runs are reused
    assert main(["bench", suite, "--out", str(out), "--tables-only"]) == 0
    assert main(["bench", suite, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("finished earlier") == 4


# -- the packaged suites -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["btkd-table6", "fmnist-gpu"])
def test_plugin_rows_of_feature_methods_are_measured_against_x_plus_kd_with_the_same_kd_term(name):
    suite = load_suite(name)
    rows = {r.label: r for r in suite.groups[0].rows}
    common = list(suite.overrides)
    checked = 0
    for x in ("FitNet", "RKD", "CRD"):
        control = rows[f"{x} + KD"]
        assert control.config == rows[x].config and control.baseline == x
        c = load_config(control.config, common + control.overrides)
        assert c.method.bias is None
        for label, row in rows.items():
            if label.startswith(f"{x} + ") and label != f"{x} + KD":
                assert row.baseline == f"{x} + KD", label
                p = load_config(row.config, common + row.overrides)
                assert p.method.bias is not None
                kd = p.method.params.get("kd_weight", FeatureDistiller.PLUGIN_KD_WEIGHT)  # the plug-in's default KD term
                assert c.method.params["kd_weight"] == kd, label
                assert c.method.params.get("temperature", 4.0) == p.method.params.get("temperature", 4.0), label
                checked += 1
    assert checked >= 3


def test_imagenet_suites_have_the_papers_rows_with_top1_and_top5():
    for name, pair in (("btkd-table2", "resnet34_imagenet-resnet18_imagenet"), ("btkd-table3", "resnet50_imagenet-mobilenetv1_imagenet")):
        suite = load_suite(name)
        assert suite.table == "imagenet"
        rows = suite.groups[0].rows
        assert [r.label for r in rows[1:9]] == ["AT", "OFD", "CRD", "ReviewKD", "InDistill", "KD", "DKD", "CTKD"]
        assert all(r.paper and r.paper.top5 for r in rows if not r.label.startswith("KD + plug-in"))
        assert all(r.config.startswith(f"configs/imagenet/{pair}/") for r in rows[1:])


def test_detection_suite_rows_are_detection_configs_with_their_paper_ap():
    suite = load_suite("btkd-table4")
    for g in suite.groups:
        for row in g.rows:
            cfg = load_detection_config(row.config, row.overrides)
            net = cfg.model or cfg.student
            assert net.backbone in ("resnet18", "mobilenet_v2")
            if row.paper:
                assert row.paper.ap50 > row.paper.acc and row.paper.ap75 is not None
        students = {load_detection_config(r.config).trained.backbone for r in g.rows}
        assert len(students) == 1  # every row trains the same student network


@pytest.mark.parametrize("name", ["slkd-table5", "slkd-table6"])
def test_slkd_sequential_rows_differ_from_slkd_only_by_the_sequential_mode(name):
    for g in load_suite(name).groups:
        rows = {r.label: r for r in g.rows}
        par = load_config(rows["SLKD (parallel)"].config)
        seq = load_config(rows["SLKD* (sequential)"].config)
        assert par.method.params["mode"] == "parallel" and seq.method.params["mode"] == "sequential"
        # the SL-teachers' phase, then as many student epochs as the parallel run
        assert seq.method.params["sl_epochs"] == par.train.epochs == seq.train.epochs - par.train.epochs
        rest = lambda p: {k: v for k, v in p.items() if k not in ("mode", "sl_epochs")}
        assert rest(seq.method.params) == rest(par.method.params)
        assert seq.student == par.student and seq.teacher == par.teacher
