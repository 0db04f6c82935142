"""Packaged detection configs and the backbones they name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from beyondkd.config import PACKAGE_CONFIGS
from beyondkd.detection.config import DetDataConfig, DetModelConfig, load_detection_config
from beyondkd.detection.models import FPN_LEVELS, build_backbone, build_detector, load_detector_weights
from beyondkd.errors import ConfigError
from tests.detection.tiny_coco import tiny_model

PAIRS = {
    "r101-r18": ("resnet101", "resnet18", "teacher_r101"),
    "r50-mv2": ("resnet50", "mobilenet_v2", "teacher_r50"),
}


@pytest.mark.parametrize("name", ["teacher_r101", "teacher_r50"])
def test_teacher_configs_follow_the_1x_schedule(name: str) -> None:
    cfg = load_detection_config(f"configs/detection/{name}.yaml")
    assert cfg.model is not None and cfg.model.backbone == {"teacher_r101": "resnet101", "teacher_r50": "resnet50"}[name]
    t = cfg.train
    assert (t.epochs, t.lr, t.milestones, cfg.data.batch_size) == (12, 0.02, [8, 11], 16)
    assert cfg.data.train_annotations == "data/coco/annotations/instances_train2017.json"
    assert cfg.data.val_images == "data/coco/val2017"
    assert cfg.model.num_classes == 80


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("suffix", ["", "_btkd", "_btkd_paper"])
def test_distill_configs_name_the_table4_pairs(pair: str, suffix: str) -> None:
    teacher_bb, student_bb, teacher_cfg = PAIRS[pair]
    cfg = load_detection_config(f"configs/detection/{pair}_kd{suffix}.yaml")
    btkd = bool(suffix)
    assert cfg.student is not None and cfg.teacher is not None
    assert (cfg.teacher.backbone, cfg.student.backbone) == (teacher_bb, student_bb)
    assert cfg.teacher.checkpoint == f"runs/coco_{teacher_cfg}/best.pt"
    assert (cfg.method.bias is not None) == btkd
    if suffix == "_btkd_paper":
        assert cfg.method.bias == {"preset": "paper"}
    assert cfg.train.epochs == 12 and cfg.train.milestones == [8, 11]


@pytest.mark.parametrize("pair, student", [("r101-r18", "student_r18"), ("r50-mv2", "student_mv2")])
def test_student_on_labels_configs_train_the_students_of_the_kd_configs(pair: str, student: str) -> None:
    alone = load_detection_config(f"configs/detection/{student}.yaml")
    kd = load_detection_config(f"configs/detection/{pair}_kd.yaml")
    assert alone.model == kd.student and alone.student is None
    assert alone.train == kd.train and alone.data == kd.data


def test_every_packaged_detection_config_validates() -> None:
    files = sorted((PACKAGE_CONFIGS / "detection").glob("*.yaml"))
    assert len(files) == 11
    for f in files:
        load_detection_config(f)


def test_unknown_key_and_bad_value_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'method\.temprature' \(did you mean 'temperature'\?\)") as exc:
        load_detection_config("configs/detection/r101-r18_kd.yaml", ["method.temprature=2"])
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="bad value for 'model.norm'"):
        load_detection_config("configs/detection/teacher_r50.yaml", ["model.norm=layer"])


def test_missing_backbone_checkpoint_is_one_line() -> None:
    cfg = load_detection_config("configs/detection/teacher_r50.yaml", ["model.backbone_checkpoint=/nonexistent/resnet50.pth"])
    with pytest.raises(ConfigError, match="backbone_checkpoint not found"):
        build_backbone(cfg.model)


def _levels(backbone: str, size: int = 64) -> dict[str, tuple[int, ...]]:
    body = build_backbone(DetModelConfig(**tiny_model(backbone))).eval()
    with torch.no_grad():
        feats = body(torch.zeros(1, 3, size, size))
    return {k: tuple(v.shape) for k, v in feats.items()}


def test_resnet18_and_mobilenet_v2_pyramids_have_the_same_levels_and_strides() -> None:
    torch.manual_seed(0)
    r18, mv2 = _levels("resnet18"), _levels("mobilenet_v2")
    assert tuple(r18) == FPN_LEVELS
    assert r18 == mv2  # FitNet adapters compare level by level
    assert r18["0"][-1] == 64 // 4 and r18["3"][-1] == 64 // 32


def test_trainable_layers_freeze_the_stem_first() -> None:
    cfg = DetModelConfig(**tiny_model("mobilenet_v2", trainable_layers=3))
    body = build_backbone(cfg).body
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1", "2", "3"}
    r = build_backbone(DetModelConfig(**tiny_model("resnet18", trainable_layers=3))).body
    assert not r.conv1.weight.requires_grad and not r.layer1[0].conv1.weight.requires_grad
    assert r.layer2[0].conv1.weight.requires_grad


def test_detector_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    data = DetDataConfig(min_size=64, max_size=64)
    cfg = DetModelConfig(**tiny_model("mobilenet_v2"))
    torch.manual_seed(0)
    model = build_detector(cfg, data).eval()
    path = tmp_path / "det.pt"
    torch.save({"model": model.state_dict(), "model_meta": {"backbone": "mobilenet_v2", "num_classes": 3}}, path)
    again = build_detector(cfg.model_copy(update={"checkpoint": str(path)}), data).eval()
    x = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        a, b = model(x)[0], again(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    with pytest.raises(ConfigError, match="holds a mobilenet_v2 detector"):
        load_detector_weights(build_detector(DetModelConfig(**tiny_model("resnet18")), data), path, DetModelConfig(**tiny_model("resnet18")))
    with pytest.raises(ConfigError, match="predicts 3 classes"):
        load_detector_weights(model, path, DetModelConfig(**tiny_model("mobilenet_v2", num_classes=4)))
