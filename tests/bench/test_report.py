"""``report``: valid PNGs with one curve per run, bias statistics labelled as logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from beyondkd.bench.plots import rectified_top_is_label_share
from beyondkd.bench.report import make_report, run_labels
from beyondkd.errors import BeyondKDError

from tests.bench.helpers import write_run

CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]  # matplotlib's default colour cycle


def _has_colour(png, hex_colour: str, min_pixels: int = 400) -> bool:
    """True when a curve of that colour is drawn (a legend handle alone covers ~100 pixels)."""
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).sum(axis=2) <= 12).sum()) >= min_pixels


def test_report_writes_curves_for_each_run(tmp_path):
    runs = [
        write_run(tmp_path / "kd" / "seed0", [60.0, 70.0, 72.0, 71.0], teacher_acc=80.0, right=900, rectified=100, rectified_top=80),
        write_run(tmp_path / "kd_btkd" / "seed0", [61.0, 71.0, 74.0, 75.0], teacher_acc=80.0, gamma=0.5, gamma_last=0.7),
        write_run(tmp_path / "kdt" / "seed0", [55.0, 65.0, 68.0, 69.0], teacher_acc=80.0, right=990, rectified=10, rectified_top=5,
                  gamma=0.2, gamma_last=0.3),
    ]
    summary = make_report(runs, tmp_path / "report")
    acc, bias = tmp_path / "report" / "accuracy.png", tmp_path / "report" / "bias_statistics.png"
    assert [str(acc), str(bias)] == summary["files"]
    for png in (acc, bias):
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300
    for colour in CYCLE[:3]:  # one curve per run
        assert _has_colour(acc, colour) and _has_colour(bias, colour)
    assert not _has_colour(acc, CYCLE[3])
    labels = [e["label"] for e in summary["runs"]]
    assert labels == ["kd/seed0", "kd_btkd/seed0", "kdt/seed0"]
    assert summary["teacher_acc"] == 80.0
    final = summary["runs"][1]["final_epoch_bias"]
    assert final["gamma_mean_over_epoch"] == 0.5 and final["gamma_at_last_step"] == 0.7
    assert final["rectified_top_is_label_share"] == pytest.approx(44 / 50)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["runs"][1]["result"]["best_acc"] == 75.0
    assert "| kd_btkd/seed0 | 4 | 75.00 (4) | 75.00 |" in (tmp_path / "report" / "report.md").read_text()


def test_report_without_bias_stats_writes_accuracy_only(tmp_path):
    d = tmp_path / "ce"
    d.mkdir()
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 1.0, "val_acc": 50.0}) + "\n")
    summary = make_report([d], tmp_path / "r")
    assert len(summary["files"]) == 1 and summary["files"][0].endswith("accuracy.png")


def test_report_of_a_folder_without_metrics_is_one_line(tmp_path):
    with pytest.raises(BeyondKDError) as info:
        make_report([tmp_path], tmp_path / "r")
    assert "\n" not in str(info.value) and "metrics.jsonl" in str(info.value)


def test_labels_are_shortest_distinct_paths(tmp_path):
    assert run_labels([tmp_path / "a" / "seed0", tmp_path / "b" / "seed0"]) == ["a/seed0", "b/seed0"]
    assert run_labels([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]


def test_rectified_share():
    assert rectified_top_is_label_share({"rows_rectified": 10, "rows_rectified_top_is_label": 9}) == 0.9
    assert rectified_top_is_label_share({"rows_rectified": 0, "rows_rectified_top_is_label": 0}) is None
    assert rectified_top_is_label_share({}) is None


def test_report_prints_epochs_to_target_against_the_plain_kd_run(tmp_path):
    kd = write_run(tmp_path / "kd" / "seed0", [60.0, 70.0, 72.0, 71.0])  # final 71 -> target 99 % = 70.29
    ours = write_run(tmp_path / "ours" / "seed0", [61.0, 71.0, 74.0, 75.0])
    slow = write_run(tmp_path / "slow" / "seed0", [55.0, 65.0, 68.0, 69.0])
    summary = make_report([kd, ours, slow], tmp_path / "r")
    assert summary["target"]["reference"] == "kd/seed0"
    assert summary["target"]["accuracy"] == pytest.approx(0.99 * 71.0)
    assert [e["epochs_to_target"] for e in summary["runs"]] == [3, 2, None]
    assert "| ours/seed0 | 4 | 75.00 (4) | 75.00 | 95.0% | 5.0% | 2 |" in summary["markdown"]
    # another reference and fraction
    summary = make_report([kd, ours, slow], tmp_path / "r2", target_fraction=0.9, reference="slow/seed0")
    assert [e["epochs_to_target"] for e in summary["runs"]] == [2, 2, 2]  # 90 % of 69 = 62.1
    with pytest.raises(BeyondKDError, match="--reference 'nope' is not one of the runs"):
        make_report([kd, ours], tmp_path / "r3", reference="nope")
    with pytest.raises(BeyondKDError, match="--target-fraction"):
        make_report([kd], tmp_path / "r4", target_fraction=1.5)
