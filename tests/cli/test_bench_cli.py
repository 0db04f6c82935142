"""``beyondkd bench`` and ``beyondkd report`` end to end on the real Fashion-MNIST slice."""

from __future__ import annotations

import json

import yaml

from beyondkd.cli.main import main


def _tiny_suite(tmp_path, root):
    data = {"root": str(root), "augment": False, "batch_size": 64, "val_batch_size": 500}
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({"name": "t", "data": data, "model": {"name": "cnn_tiny"}}))
    ce = tmp_path / "ce.yaml"
    ce.write_text(yaml.safe_dump({"name": "ce", "data": data, "model": {"name": "cnn_tiny"}}))
    kd = tmp_path / "kd.yaml"
    kd.write_text(yaml.safe_dump({"name": "kd", "data": data, "teacher": {"name": "cnn_tiny", "checkpoint": "set-by-bench.pt"},
                                  "student": {"name": "cnn_tiny"}, "method": {"name": "kd", "params": {"temperature": 4.0}}}))
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny", "description": "slice test", "table": "ablation", "seeds": [5],
        "overrides": ["data.subset=800", "data.val_subset=400", "train.epochs=1", "train.progress_bar=false"],
        "groups": [{"name": "tiny -> tiny", "teacher": {"config": str(teacher)}, "rows": [
            {"label": "CE", "config": str(ce)},
            {"label": "KD", "config": str(kd), "baseline": "CE"},
            {"label": "KD + BTKD", "config": str(kd), "overrides": ["method.bias.preset=constant"], "baseline": "KD",
             "paper": {"acc": 81.5, "source": "BTKD Table 1"}},
        ]}]}, allow_unicode=True))
    return suite


def test_bench_tiny_suite_two_seeds_then_reuse_and_report(fmnist_slice, tmp_path, capsys):
    suite = _tiny_suite(tmp_path, fmnist_slice)
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--seeds", "0,1", "--out", str(out), "train.threads=1"]) == 0
    text = capsys.readouterr().out
    assert "### tiny -> tiny" in text and "| KD + BTKD | constant | ✓ | ✓ |" in text and "| 2/2 |" in text
    table = json.loads((out / "table.json").read_text())
    rows = {r["label"]: r for r in table["groups"][0]["rows"]}
    assert all(r["best"]["n"] == 2 and 10 < r["best"]["mean"] <= 100 for r in rows.values())
    assert rows["KD + BTKD"]["paper"]["acc"] == 81.5
    assert (out / "tiny-tiny" / "accuracy.png").is_file()  # mean curves per row
    teacher = table["groups"][0]["teacher"]
    assert teacher["best"]["n"] == 1 and teacher["how"].startswith("trained by the suite")
    # every student run measured the suite's teacher (on its own seed's validation subset)
    measured = teacher["teacher_acc_measured_by_students"]
    assert measured["n"] == 4 and 10 < measured["mean"] <= 100
    assert "measured by the student runs" in text
    run0 = out / "tiny-tiny" / "kd-plus-btkd" / "seed0"
    bias_lines = [json.loads(l) for l in (run0 / "metrics.jsonl").read_text().splitlines()]
    assert bias_lines[0]["rows_right"] < bias_lines[0]["rows"]  # the plug-in saw teacher-wrong rows
    stamp = (run0 / "summary.json").stat().st_mtime_ns
    # a second call reuses every finished run and prints the same table
    assert main(["bench", str(suite), "--seeds", "0,1", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier") == 7 and (run0 / "summary.json").stat().st_mtime_ns == stamp
    assert (out / "table.md").read_text().split("\n## ")[0] in again
    # report on two of the runs
    assert main(["report", str(out / "tiny-tiny" / "kd" / "seed0"), str(run0), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "accuracy.png").is_file() and (tmp_path / "rep" / "bias_statistics.png").is_file()


def test_bench_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "no-such-suite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown suite") and "\n" not in err
    assert main(["bench", "fmnist-cpu", "--seeds", "0,x", "--dry-run"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_a_failing_run_is_reported_and_the_table_still_written(fmnist_slice, tmp_path, capsys):
    kd = tmp_path / "kd.yaml"
    kd.write_text(yaml.safe_dump({"name": "kd", "data": {"root": str(fmnist_slice), "augment": False},
                                  "teacher": {"name": "cnn_tiny", "checkpoint": str(tmp_path / "missing.pt")},
                                  "student": {"name": "cnn_tiny"}}))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "seeds": [0], "groups": [{"name": "g", "rows": [{"label": "KD", "config": str(kd)}]}]}))
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "FAILED: teacher checkpoint not found" in captured.out
    assert "| KD | — | — | — | 0/1 |" in (tmp_path / "out" / "table.md").read_text()
    assert "error: g / KD seed 0 failed" in captured.err
