"""End to end on a tiny COCO-format dataset: teacher training, KD and KD+BTKD, COCOeval, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from beyondkd.cli.main import main
from beyondkd.detection.config import DetTrainConfig, validate_detection_config
from beyondkd.detection.trainer import _check_finite, lr_factor, train_detection
from beyondkd.engine.logging import read_metrics
from beyondkd.errors import ConfigError, NonFiniteLossError
from tests.detection.tiny_coco import tiny_model, tiny_run

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _valid_ap(record: dict) -> None:
    for k in AP_KEYS:
        v = record[k]
        assert isinstance(v, float)
        assert v == -1.0 or 0.0 <= v <= 1.0, (k, v)


@pytest.fixture(scope="module")
def tiny_teacher(tiny_coco: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained for a few iterations (its quality is irrelevant to these tests)."""
    out = tmp_path_factory.mktemp("det_teacher")
    cfg = validate_detection_config(tiny_run(tiny_coco, out, model=tiny_model(), train={"max_steps_per_epoch": 3}))
    result = train_detection(cfg, "train-teacher", echo=False)
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    _valid_ap(result.history[-1])
    return out / "last.pt"


def test_teacher_run_writes_coco_metrics(tiny_teacher: Path) -> None:
    records = read_metrics(tiny_teacher.parent)
    assert len(records) == 1 and records[0]["epoch"] == 1
    _valid_ap(records[0])
    assert math.isfinite(records[0]["train_loss"]) and records[0]["steps"] == 3
    summary = json.loads((tiny_teacher.parent / "summary.json").read_text())
    assert summary["mode"] == "train-teacher"


@pytest.mark.parametrize("bias", [None, {"preset": "paper"}])
def test_distill_kd_and_btkd_end_to_end(tiny_coco: dict[str, str], tiny_teacher: Path, tmp_path: Path, bias: dict | None) -> None:
    method = {"temperature": 1.0} if bias is None else {"bias": bias, "box": {"weight": 1.0}}
    cfg = validate_detection_config(tiny_run(
        tiny_coco, tmp_path, student=tiny_model(), teacher=tiny_model(checkpoint=str(tiny_teacher)),
        method=method, train={"max_steps_per_epoch": 2},
    ))
    result = train_detection(cfg, "distill", echo=False)
    rec = result.history[-1]
    _valid_ap(rec)
    assert 0.0 <= rec["teacher_roi_acc"] <= 1.0
    if bias is None:
        assert "train_loss_kd" in rec
    else:
        assert {"train_loss_kd_easy", "train_loss_kd_hard", "train_loss_box_kd", "gamma"} <= set(rec)
    assert read_metrics(tmp_path)[-1]["AP"] == rec["AP"]
    _valid_ap(result.teacher)  # the teacher is scored once on the same validation set
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["teacher_AP"] == result.teacher["AP"] and summary["mode"] == "distill"


def test_resume_continues_from_last_checkpoint(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    raw = tiny_run(tiny_coco, tmp_path, model=tiny_model(), train={"max_steps_per_epoch": 1, "epochs": 1})
    train_detection(validate_detection_config(raw), "train-teacher", echo=False)
    raw["train"]["epochs"] = 2  # type: ignore[index]
    result = train_detection(validate_detection_config(raw), "train-teacher", resume=True, echo=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_distill_and_eval(tiny_coco: dict[str, str], tiny_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    raw = tiny_run(tiny_coco, tmp_path / "run", student=tiny_model(), teacher=tiny_model(checkpoint=str(tiny_teacher)),
                   method={"bias": {}}, train={"max_steps_per_epoch": 1})
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    assert main(["detect", "distill", "-c", str(cfg_file)]) == 0
    assert main(["detect", "eval", "-k", str(tmp_path / "run" / "best.pt"), "-c", str(cfg_file), "train.device=cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(line)
    _valid_ap(metrics)
    assert metrics["AP"] == read_metrics(tmp_path / "run")[-1]["AP"]  # same model, same data, same numbers


def test_cli_bad_inputs_are_one_line(tiny_coco: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    def run(raw: dict, mode: str = "train-teacher") -> str:
        f = tmp_path / "bad.yaml"
        f.write_text(yaml.safe_dump(raw))
        assert main(["detect", mode, "-c", str(f)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        return err

    base = tiny_run(tiny_coco, tmp_path / "out", model=tiny_model())
    missing = {**base, "data": {**base["data"], "train_annotations": str(tmp_path / "nope.json")}}  # type: ignore[dict-item]
    assert "annotation file not found" in run(missing)
    wrong = tiny_run(tiny_coco, tmp_path / "out", model=tiny_model(num_classes=80))
    err = run(wrong)
    assert "model.num_classes=80" in err and "3 categories" in err and "set model.num_classes=3" in err
    unknown = {**base, "train": {**base["train"], "lr_steps": [1]}}  # type: ignore[dict-item]
    assert "unknown key 'train.lr_steps'" in run(unknown)
    no_teacher = tiny_run(tiny_coco, tmp_path / "out", student=tiny_model(), teacher=tiny_model())
    assert "teacher.checkpoint is required" in run(no_teacher, "distill")
    bad_backbone = tiny_run(tiny_coco, tmp_path / "out", model=tiny_model(backbone="resnet19"))
    assert "unknown detection backbone 'resnet19'" in run(bad_backbone)


def test_lr_schedule_warmup_then_steps() -> None:
    cfg = DetTrainConfig(warmup_iters=10, warmup_factor=0.001, milestones=[8, 11], lr_gamma=0.1)
    assert lr_factor(0, 100, cfg) == pytest.approx(0.001)
    assert lr_factor(5, 100, cfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, 100, cfg) == 1.0
    assert lr_factor(799, 100, cfg) == 1.0
    assert lr_factor(800, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(1100, 100, cfg) == pytest.approx(0.01)


def test_nan_guard_names_the_term(tmp_path: Path) -> None:
    terms = {"loss_ce": torch.tensor(1.0), "loss_kd": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match=r"loss_kd = nan.*epoch 2, step 4") as exc:
        _check_finite(torch.tensor(float("nan")), terms, 1, 3, tmp_path / "last.pt")
    assert "\n" not in str(exc.value)
    _check_finite(torch.tensor(1.0), terms, 0, 0, tmp_path / "last.pt")  # finite: no error


def test_mode_section_mismatch_is_one_line(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_detection_config(tiny_run(tiny_coco, tmp_path, student=tiny_model(), teacher=tiny_model()))
    with pytest.raises(ConfigError, match="needs a 'model' section"):
        train_detection(cfg, "train-teacher", echo=False)


def test_cli_eval_missing_checkpoint_or_data_is_one_line(tiny_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", "eval", "-k", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # default COCO paths that do not exist here
    assert main(["detect", "eval", "-k", str(tiny_teacher), "data.val_images=" + str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "annotation file not found" in err and "\n" not in err


def test_cross_architecture_student_with_feature_adapters(tiny_coco: dict[str, str], tiny_teacher: Path, tmp_path: Path) -> None:
    """The R50→MV2 shape of pair in miniature: a MobileNetV2 student with a narrower FPN."""
    cfg = validate_detection_config(tiny_run(
        tiny_coco, tmp_path, student=tiny_model("mobilenet_v2", fpn_channels=8), teacher=tiny_model(checkpoint=str(tiny_teacher)),
        method={"bias": {}, "feature": {"weight": 1.0}, "box": {"weight": 0.5, "loss": "l2"}},
        train={"max_steps_per_epoch": 1, "eval_teacher": False},
    ))
    result = train_detection(cfg, "distill", echo=False)
    rec = result.history[-1]
    _valid_ap(rec)
    assert rec["train_loss_feature"] > 0 and result.teacher == {}
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["model_meta"]["backbone"] == "mobilenet_v2"
    assert ckpt["extra"]["adapters"]["convs.0.weight"].shape == (16, 8, 1, 1)  # student 8 -> teacher 16 channels
