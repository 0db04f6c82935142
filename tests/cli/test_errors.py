"""Bad input gives one line naming the problem and the fix (exit status 2), never a traceback."""

from __future__ import annotations

import torch
import yaml

from beyondkd.cli.main import main
from beyondkd.models import build_model


def _err(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def _cfg(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_unknown_config_key(capsys):
    msg = _err(capsys, ["distill", "-c", "configs/kd.yaml", "train.epoch=3"])
    assert "unknown key 'train.epoch'" in msg and "did you mean 'epochs'" in msg


def test_unknown_model(capsys, fmnist_slice, tmp_path):
    msg = _err(capsys, ["train-teacher", "-c", _cfg(tmp_path, {"model": {"name": "resnet9"}, "data": {"root": str(fmnist_slice)}})])
    assert "unknown model 'resnet9'" in msg and "beyondkd models" in msg


def test_unknown_method_param_and_method(capsys):
    assert "unknown parameter 'temp' for method 'kd'" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "method.params.temp=3"])
    assert "unknown method 'kdd'" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "method.name=kdd"])
    assert "unknown bias preset 'papr'" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "method.bias.preset=papr"])


def test_missing_dataset(capsys, tmp_path):
    msg = _err(capsys, ["train-teacher", "-c", _cfg(tmp_path, {"model": {"name": "cnn_tiny"}, "data": {"root": str(tmp_path / "none")}})])
    assert "apt-get install dataset-fashion-mnist" in msg


def test_missing_teacher_checkpoint(capsys, fmnist_slice, tmp_path):
    msg = _err(capsys, ["distill", "-c", "configs/kd.yaml", f"data.root={fmnist_slice}", f"teacher.checkpoint={tmp_path}/none.pt"])
    assert "teacher checkpoint not found" in msg and "train-teacher" in msg


def test_class_count_mismatch(capsys, fmnist_slice, tmp_path):
    teacher = build_model("resnet8", 100, 1)
    with_meta = tmp_path / "t100.pt"
    torch.save({"model": teacher.state_dict(), "model_meta": {"name": "resnet8", "num_classes": 100, "in_channels": 1}}, with_meta)
    msg = _err(capsys, ["distill", "-c", "configs/kd.yaml", f"data.root={fmnist_slice}", f"teacher.checkpoint={with_meta}", "teacher.name=resnet8"])
    assert "has 100 classes but dataset 'fashion_mnist' has 10" in msg
    plain = tmp_path / "plain.pt"
    torch.save(teacher.state_dict(), plain)
    msg = _err(capsys, ["distill", "-c", "configs/kd.yaml", f"data.root={fmnist_slice}", f"teacher.checkpoint={plain}", "teacher.name=resnet8"])
    assert "fc.weight" in msg and "num_classes" in msg


def test_wrong_teacher_name_for_checkpoint(capsys, fmnist_slice, slice_teacher):
    msg = _err(capsys, ["distill", "-c", "configs/kd.yaml", f"data.root={fmnist_slice}", f"teacher.checkpoint={slice_teacher}"])
    assert "holds model 'cnn_small'" in msg and "teacher.name: cnn_small" in msg


def test_bad_yaml_and_missing_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert "invalid YAML" in _err(capsys, ["distill", "-c", str(bad)])
    assert "not found" in _err(capsys, ["distill", "-c", str(tmp_path / "nope.yaml")])
    assert "must look like section.key=value" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "epochs"])


def test_wrong_section_for_command(capsys, tmp_path):
    assert "needs a 'model:' section" in _err(capsys, ["train-teacher", "-c", "configs/kd.yaml"])
    assert "needs a 'student:' section" in _err(capsys, ["distill", "-c", "configs/fmnist/teacher.yaml"])


def test_bad_values(capsys):
    assert "bad value for 'train.epochs'" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "train.epochs=0"])
    assert "bad value for 'variant'" in _err(capsys, ["distill", "-c", "configs/kd.yaml", "method.bias.variant=stric"])
    assert "fp16 needs a CUDA device" in _err(capsys, ["train-teacher", "-c", "configs/fmnist/teacher.yaml", "train.precision=fp16", "train.device=cpu"])
