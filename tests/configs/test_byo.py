"""The README's "bring your own model and data" configs, end to end with tiny random models and a tiny image folder."""

from __future__ import annotations

import pytest
import torch

from beyondkd.config import load_config
from beyondkd.engine.build import prepare_run, run_training
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.logging import read_metrics
from tests.data.test_image_folder import make_tree

pytest.importorskip("timm")

#: what the test changes: the data, the run folders, a tiny timm teacher, no downloads, one short epoch
SMALL = ["data.options.image_size=32", "data.batch_size=4", "data.val_batch_size=8", "data.num_workers=0",
         "train.epochs=1", "train.progress_bar=false"]


def test_shipped_configs_name_a_timm_teacher_a_torchvision_student_and_an_image_folder():
    teacher, distill = load_config("configs/byo/teacher.yaml"), load_config("configs/byo/distill.yaml")
    assert distill.data.name == teacher.data.name == "image_folder" and distill.data.options["image_size"] == 160
    assert teacher.model.name == distill.teacher.name == "timm:resnet50" and teacher.model.pretrained
    assert teacher.student is None and teacher.teacher is None and teacher.method.name == "vanilla"
    assert distill.teacher.checkpoint == f"runs/{teacher.name}/best.pt"
    assert distill.student.name == "torchvision:resnet18" and distill.student.pretrained and distill.student.freeze


def test_teacher_then_distillation_on_your_image_folder(tmp_path):
    make_tree(tmp_path / "images", classes=("ant", "bee", "fly"), per_class=4, size=40)
    data = [f"data.root={tmp_path / 'images'}", *SMALL]
    teacher_cfg = load_config("configs/byo/teacher.yaml", [*data, f"output_dir={tmp_path / 'teacher'}",
                                                          "model.name=timm:test_resnet", "model.pretrained=false"])
    teacher = run_training(teacher_cfg, "train-teacher")
    assert (teacher.output_dir / "best.pt").is_file()

    cfg = load_config("configs/byo/distill.yaml", [*data, f"output_dir={tmp_path / 'student'}",
                                                   "teacher.name=timm:test_resnet",
                                                   f"teacher.checkpoint={teacher.output_dir / 'best.pt'}",
                                                   "student.pretrained=false"])
    prepared = prepare_run(cfg, "distill")
    start = {k: v.clone() for k, v in prepared.distiller.student.state_dict().items()}
    result = prepared.trainer.fit()
    record = read_metrics(result.output_dir)[-1]
    assert {"loss_feat", "loss_ce", "val_acc"} <= set(record) and record["loss_feat"] > 0
    assert result.summary["teacher_acc"] is not None
    saved = load_checkpoint(result.output_dir / "last.pt")["model"]
    assert saved["fc.weight"].shape == (3, 512)
    for k, v in saved.items():  # conv1, bn1 and layer1 frozen as the config says; the rest trained
        frozen = k.startswith(("conv1.", "bn1.", "layer1."))
        if k.endswith(("weight", "running_mean")):
            assert torch.equal(v, start[k]) == frozen, k
