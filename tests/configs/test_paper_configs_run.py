"""A packaged CIFAR-100 recipe runs end to end (teacher, then KD + BTKD) on tiny CIFAR-format files."""

from __future__ import annotations

import json

import pytest
import torch

from beyondkd.cli.main import main
from tests.data.test_cifar import write_cifar100


@pytest.mark.slow  # ~40 s of CPU: two short runs with evaluation, plots and logs
def test_cifar100_teacher_then_kd_btkd(tmp_path, capsys):
    write_cifar100(tmp_path / "data", n=48)
    common = [f"data.root={tmp_path / 'data'}", "data.batch_size=16", "data.val_batch_size=48", "train.epochs=1",
              "train.progress_bar=false", "train.device=cpu"]
    teacher_dir = tmp_path / "runs" / "cifar100_teacher_resnet56"
    assert main(["train-teacher", "-c", "configs/cifar100/teachers/resnet56.yaml", "-o", str(teacher_dir), *common]) == 0
    ckpt = teacher_dir / "best.pt"
    assert torch.load(ckpt, weights_only=False)["model_meta"]["num_classes"] == 100
    capsys.readouterr()
    out_dir = tmp_path / "runs" / "kd_btkd"
    assert main(["distill", "-c", "configs/cifar100/resnet56-resnet8/kd_btkd.yaml", "-o", str(out_dir),
                 f"teacher.checkpoint={ckpt}", *common]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "kd" and 0.0 <= summary["best_acc"] <= 100.0
    assert (out_dir / "best.pt").is_file()
