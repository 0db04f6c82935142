"""Detection on the engine under torchrun: a 2-process gloo KD + BTKD run with feature adapters."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml

from beyondkd.detection.config import DetDataConfig, DetModelConfig
from beyondkd.detection.models import build_detector
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.logging import read_metrics
from tests.conftest import torchrun
from tests.detection.tiny_coco import tiny_model, tiny_run


def test_detection_distils_under_torchrun(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(build_detector(DetModelConfig(**tiny_model()), DetDataConfig(min_size=64, max_size=64)).state_dict(), teacher)
    raw = tiny_run(tiny_coco, tmp_path / "run", student=tiny_model(), teacher=tiny_model(checkpoint=str(teacher)),
                   method={"bias": {}, "feature": {"weight": 1.0}}, train={"progress_bar": False})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proc = torchrun(["-m", "beyondkd", "detect", "distill", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (rec,) = read_metrics(tmp_path / "run")
    assert rec["steps"] == 2  # 8 images over 2 processes, batches of 2
    assert math.isfinite(rec["loss_feature"]) and 0.0 <= rec["teacher_roi_acc"] <= 1.0
    assert rec["AP"] == -1.0 or 0.0 <= rec["AP"] <= 1.0  # COCOeval over both processes' predictions
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["world_size"] == 2 and "adapters.convs.0.weight" in ckpt["distiller"]
