"""The demo's header names its regime, its table fits 80 columns, and its reading follows its own numbers."""

from __future__ import annotations

import json

from beyondkd.cli.demo import DEFAULT_REGIME, REGIMES, reading
from beyondkd.cli.main import main


def test_demo_header_table_and_reading(capsys, monkeypatch, fmnist_slice, tmp_path):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "-o", str(tmp_path / "demo"), "--data-root", str(fmnist_slice), "--subset", "600",
                 "--epochs", "1", "--teacher-epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # the console wraps long lines
    regime = REGIMES[DEFAULT_REGIME]
    assert regime.title in flat and regime.story in flat
    assert "1 epochs" not in flat and "for 1 epoch each" in flat
    if regime.teacher_fraction is not None:  # the limited teacher trains on its fraction of the student's images
        assert f"on {round(regime.teacher_fraction * 600):,} images" in flat
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("run") and "best" in line)
    table = lines[head - 1: head + 7]
    assert all(len(line) <= 80 for line in table), table  # the table fits 80 columns
    assert "train s" in lines[head] and "Δ KD" in lines[head]
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert report["regime"] == DEFAULT_REGIME
    assert report["teacher_on_train_rows"].startswith("the teacher is ")
    kd = next(s["best_acc"] for s in report["students"] if s["run"] == "KD")
    ours = next(s for s in report["students"] if s["run"].startswith("KD + "))
    assert f"{ours['best_acc'] - kd:+.2f} points" in report["reading"][0]
    for line in report["reading"]:
        assert " ".join(line.split()) in flat


def _evidence(delta, noise, std):
    return {"source": "regime suites, test", "groups": {"g": {"0.1/0.9": {
        "kd": {"mean": 90.0, "std": std, "n": 5},
        "settings": {"eliminate-only": {"mean": 90.0 + delta, "std": 0.1, "n": 5, "delta": delta, "noise": noise}}}}}}


def test_the_reading_compares_the_runs_gain_with_the_measured_spread():
    rows = {"KD": 90.0, "KD + eliminate-only": 90.5, "CE (labels only)": 89.7}
    lines = reading(rows, "KD + eliminate-only", "eliminate-only", "0.1/0.9", _evidence(0.4, 0.08, 0.15), "g")
    assert lines[0] == "This run: KD + eliminate-only is +0.50 points above KD (best epoch); CE alone is -0.30 against KD."
    assert "+0.40 ± 0.08 (standard error) over KD across 5 seeds; KD's seed-to-seed std there was 0.15" in lines[1]
    assert "larger than that spread" in lines[2]
    rows["KD + eliminate-only"] = 90.1
    assert "within that spread" in reading(rows, "KD + eliminate-only", "eliminate-only", "0.1/0.9", _evidence(0.4, 0.08, 0.15), "g")[2]
    missing = reading(rows, "KD + eliminate-only", "eliminate-only", "0.5/0.5", _evidence(0.4, 0.08, 0.15), "g")
    assert missing[1].startswith("BENCHMARKS.md has no measurement")
