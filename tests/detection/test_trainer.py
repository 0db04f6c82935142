"""End to end on a tiny COCO-format dataset, on the engine's trainer: teacher training, KD and
KD+BTKD, COCOeval, exact resume, the NaN guard, the one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from beyondkd.cli.main import main
from beyondkd.core import StepOutput
from beyondkd.detection.config import DetTrainConfig, validate_detection_config
from beyondkd.detection.task import lr_factor, prepare_detection_run, run_detection
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.logging import read_metrics
from beyondkd.errors import BeyondKDError, ConfigError, NonFiniteLossError
from tests.helpers import StopAfter
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
    result = run_detection(cfg, "train-teacher")
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    _valid_ap(result.history[-1])
    return out / "last.pt"


def test_teacher_run_writes_coco_metrics(tiny_teacher: Path) -> None:
    records = read_metrics(tiny_teacher.parent)
    assert len(records) == 1 and records[0]["epoch"] == 0
    _valid_ap(records[0])
    assert math.isfinite(records[0]["train_loss"]) and records[0]["steps"] == 3
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr", "lr_student"} <= set(records[0])
    summary = json.loads((tiny_teacher.parent / "summary.json").read_text())
    assert summary["mode"] == "train-teacher" and summary["best_AP"] == records[0]["AP"]
    ckpt = load_checkpoint(tiny_teacher)  # the classification runs' checkpoint format
    assert ckpt["task"] == "detection" and ckpt["epoch"] == 1 and ckpt["global_step"] == 3
    assert {"optimizers", "schedulers", "rng", "history", "config"} <= set(ckpt)


@pytest.mark.parametrize("bias", [None, {"preset": "paper"}])
def test_distill_kd_and_btkd_end_to_end(tiny_coco: dict[str, str], tiny_teacher: Path, tmp_path: Path, bias: dict | None) -> None:
    method = {"temperature": 1.0} if bias is None else {"bias": bias, "box": {"weight": 1.0}}
    cfg = validate_detection_config(tiny_run(
        tiny_coco, tmp_path, student=tiny_model(), teacher=tiny_model(checkpoint=str(tiny_teacher)),
        method=method, train={"max_steps_per_epoch": 2},
    ))
    result = run_detection(cfg, "distill")
    rec = result.history[-1]
    _valid_ap(rec)
    assert 0.0 <= rec["teacher_roi_acc"] <= 1.0
    assert rec["teacher_roi_acc"] == rec["teacher_right"] / rec["rois"]  # counts summed over the epoch
    if bias is None:
        assert "loss_kd" in rec
    else:
        assert {"loss_kd_easy", "loss_kd_hard", "loss_box_kd", "gamma", "gamma_last"} <= set(rec)
    assert read_metrics(tmp_path)[-1]["AP"] == rec["AP"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    _valid_ap({k: summary[f"teacher_{k}"] for k in AP_KEYS})  # the teacher is scored once on the same validation set
    assert summary["mode"] == "distill" and summary == result.summary



def test_interrupted_detection_run_resumes_to_identical_weights(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    def config(out: Path):
        return validate_detection_config(tiny_run(tiny_coco, out, model=tiny_model(),
                                                  train={"epochs": 2, "max_steps_per_epoch": 2, "checkpoint_every_steps": 1}))

    full = run_detection(config(tmp_path / "full"), "train-teacher")
    part = prepare_detection_run(config(tmp_path / "part"), "train-teacher")
    part.trainer.train_loader = StopAfter(part.trainer.train_loader, 3)  # epoch 2, after its first step
    with pytest.raises(KeyboardInterrupt):
        part.trainer.fit()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step_in_epoch"] == 1
    resumed = run_detection(config(tmp_path / "part"), "train-teacher", resume=True)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt")["model"], load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["AP"] for r in resumed.history] == [r["AP"] for r in full.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]  # every batch counted
    assert not list((tmp_path / "part").glob(".*.tmp"))


def test_resume_extends_the_epochs_and_refuses_other_changes(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    raw = tiny_run(tiny_coco, tmp_path, model=tiny_model(), train={"max_steps_per_epoch": 1, "epochs": 1})
    run_detection(validate_detection_config(raw), "train-teacher")
    raw["train"]["lr"] = 0.5  # type: ignore[index]
    with pytest.raises(BeyondKDError, match=r"change training: train.lr \(0.01 -> 0.5\)"):
        run_detection(validate_detection_config(raw), "train-teacher", resume=True)
    raw["train"]["lr"], raw["train"]["epochs"] = 0.01, 2  # type: ignore[index]
    result = run_detection(validate_detection_config(raw), "train-teacher", resume=True)  # multistep: extendable
    assert [r["epoch"] for r in result.history] == [0, 1]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 2


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


def test_nan_guard_names_the_term_and_keeps_the_checkpoint(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_detection_config(tiny_run(tiny_coco, tmp_path, model=tiny_model(), train={"epochs": 2, "max_steps_per_epoch": 2}))
    prepared = prepare_detection_run(cfg, "train-teacher")
    method, calls = prepared.method, []
    real = method.training_step

    def poisoned(batch, progress):
        out = real(batch, progress)
        calls.append(1)
        if len(calls) > 2:  # epoch 2
            out.terms["objectness"] = out.terms["objectness"] * float("nan")
            return StepOutput(out.loss * float("nan"), None, out.terms, out.stats, out.reductions)
        return out

    method.training_step = poisoned
    with pytest.raises(NonFiniteLossError, match=r"objectness = nan.*epoch 2, step 1.*lower train.lr.*last.pt is intact") as exc:
        prepared.trainer.fit()
    assert "\n" not in str(exc.value)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_mode_section_mismatch_is_one_line(tiny_coco: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_detection_config(tiny_run(tiny_coco, tmp_path, student=tiny_model(), teacher=tiny_model()))
    with pytest.raises(ConfigError, match="needs a 'model' section"):
        run_detection(cfg, "train-teacher")


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
    result = run_detection(cfg, "distill")
    rec = result.history[-1]
    _valid_ap(rec)
    assert rec["loss_feature"] > 0 and "teacher_AP" not in result.summary
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["model_meta"]["backbone"] == "mobilenet_v2"
    assert ckpt["distiller"]["adapters.convs.0.weight"].shape == (16, 8, 1, 1)  # student 8 -> teacher 16 channels
