"""The CLI end to end on real Fashion-MNIST: train-teacher, distill, eval, kill and resume, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from beyondkd.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "beyondkd", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"beyondkd {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_teacher_distill_eval(fmnist_slice, tmp_path):
    teacher_cfg = _write(tmp_path / "teacher.yaml", {
        "name": "t", "data": {"root": str(fmnist_slice), "augment": False, "batch_size": 64},
        "model": {"name": "cnn_small"}, "train": {"epochs": 1, "progress_bar": False}})
    cli("train-teacher", "-c", str(teacher_cfg), "-o", str(tmp_path / "teacher"))
    ckpt = tmp_path / "teacher" / "best.pt"
    out = cli("distill", "-c", "configs/kd_btkd.yaml", "-o", str(tmp_path / "kd_btkd"),
              f"data.root={fmnist_slice}", "data.augment=false", "train.epochs=1", "train.progress_bar=false",
              "teacher.name=cnn_small", f"teacher.checkpoint={ckpt}", "student.name=cnn_tiny")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    # before training, distill says how often the teacher is right on the student's rows
    reading = summary["teacher_on_train_rows"]["reading"]
    assert out.stdout.index(reading) < out.stdout.index("best ")
    assert reading.startswith("the teacher is ")
    assert summary["method"] == "kd" and summary["rows_teacher_wrong"] > 0
    assert 10 < summary["best_acc"] <= 100
    ev = cli("eval", "-k", str(tmp_path / "kd_btkd" / "best.pt"), "--data-root", str(fmnist_slice))
    metrics = json.loads(ev.stdout.strip().splitlines()[-1])
    assert metrics["val_acc"] == pytest.approx(summary["best_acc"], abs=1e-6)


def test_kill_and_resume(fmnist_slice, slice_teacher, tmp_path):
    cfg = _write(tmp_path / "kd.yaml", {
        "name": "kd", "output_dir": str(tmp_path / "run"),
        "data": {"root": str(fmnist_slice), "augment": True, "batch_size": 32},
        "teacher": {"name": "cnn_small", "checkpoint": str(slice_teacher)}, "student": {"name": "resnet8"},
        "method": {"name": "kd", "bias": {"preset": "paper"}},
        "train": {"epochs": 4, "progress_bar": False}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "beyondkd", "distill", "-c", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "run" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= done_before < 4
    if (tmp_path / "run" / "best.pt").exists():  # a kill mid-save leaves the previous file whole
        torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    cli("distill", "-c", str(cfg), "--resume")
    assert not list((tmp_path / "run").glob(".*.tmp"))  # resume cleared any half-written temp file
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3]
    assert torch.load(last, weights_only=True)["epoch"] == 4


def test_demo_small(fmnist_slice, tmp_path):
    out = cli("demo", "-o", str(tmp_path / "demo"), "--data-root", str(fmnist_slice), "--subset", "1000",
              "--epochs", "1", "--teacher-epochs", "1", "--no-progress")
    text = out.stdout
    from beyondkd.bias.config import default_bias_preset

    for label in ("teacher", "CE (labels only)", "KD", f"KD + {default_bias_preset()}"):
        assert label in text
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert len(report["students"]) == 3
    assert all(0 < s["best_acc"] <= 100 for s in report["students"])
    assert (tmp_path / "demo" / "accuracy.png").is_file()
    # a second demo never overwrites the first
    assert cli("demo", "-o", str(tmp_path / "demo"), "--data-root", str(fmnist_slice), "--subset", "300", "--epochs", "1",
               "--teacher-epochs", "1", "--no-progress").returncode == 0
    assert (tmp_path / "demo-2" / "demo.json").is_file()


def test_listing_commands(capsys):
    assert main(["models", "--no-flops"]) == 0
    assert "resnet32x4" in capsys.readouterr().out
    for cmd in ("methods", "datasets", "configs", "presets"):
        assert main([cmd]) == 0
    out = capsys.readouterr().out
    assert "kd" in out and "fashion_mnist" in out and "configs/kd.yaml" in out and "official-code" in out
