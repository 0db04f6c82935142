"""DKD, CTKD, CTKD+DKD and CRD: packaged configs validate; short real runs on Fashion-MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beyondkd.config import load_config
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.engine.build import parse_bias, run_training
from beyondkd.models import build_model
from tests.conftest import slice_config

CONFIGS = ["dkd", "dkd_btkd", "ctkd", "ctkd_btkd", "ctkd_dkd", "ctkd_dkd_btkd", "crd", "crd_btkd"]


@pytest.mark.parametrize("name", CONFIGS)
def test_packaged_config_validates_and_builds(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.method.name == name.removesuffix("_btkd")
    bias = parse_bias(cfg.method.bias)
    assert (bias is not None) == name.endswith("_btkd")
    context = DistillerContext(num_classes=10, in_channels=1, image_size=28, num_samples=60_000, total_steps=100, total_epochs=cfg.train.epochs)
    student = build_model(cfg.student.name, 10, 1)
    teacher = build_model(cfg.teacher.name, 10, 1)
    d = build_distiller(cfg.method.name, student, teacher, cfg.method.params, bias, context)
    assert d.name == cfg.method.name and d.param_groups()["student"]


# 2 epochs on the 2 000-image slice; DKD's warm-up is off so the loss is comparable across epochs.
# CTKD's temperature module *maximises* the distillation term (its λ grows from 0 during these
# epochs), so for CTKD the total loss may rise by design: its student's CE term must fall instead.
RUNS = {
    "dkd": {"warmup_epochs": 0},
    "ctkd": {"mode": "global", "cos_epochs": 2},
    "ctkd_dkd": {"mode": "instance", "cos_epochs": 2, "warmup_epochs": 0},
    "crd": {"nce_k": 256},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(RUNS))
@pytest.mark.parametrize("bias", [False, True])
def test_short_distillation_on_real_slice_lowers_its_loss(method, bias, fmnist_slice, slice_teacher, tmp_path):
    params = dict(RUNS[method])
    if method == "crd" and bias:
        params["kd_weight"] = 1.0
    section = {"name": method, "params": params}
    if bias:
        section["bias"] = {"preset": "constant"}
    # DKD's β T² = 128 makes small students collapse without clipping (docs/methods-logit.md)
    train = {"epochs": 2, "grad_clip": 5.0} if "dkd" in method else {"epochs": 2}
    raw = slice_config(fmnist_slice, tmp_path / "run", slice_teacher, method=section, train=train)
    result = run_training(load_config(raw=raw), "distill")
    key = "loss_ce" if method.startswith("ctkd") else "train_loss"
    losses = [r[key] for r in result.history]
    assert len(losses) == 2 and all(l == l for l in losses)
    assert losses[-1] < losses[0], losses
    assert result.best_acc > 40
    if method.startswith("ctkd"):
        last = result.history[-1]
        assert 1.0 <= last["temperature_min"] <= last["temperature_max"] <= 21.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dkd_btkd", "ctkd_btkd", "ctkd_dkd_btkd", "crd_btkd"])
def test_cli_one_epoch_with_plugin(name, fmnist_slice, slice_teacher, tmp_path):
    from tests.cli.test_cli import cli

    extra = ["method.params.nce_k=256"] if name.startswith("crd") else []
    out = cli("distill", "-c", f"configs/{name}.yaml", "-o", str(tmp_path / name),
              f"data.root={fmnist_slice}", "data.augment=false", "train.epochs=1", "train.progress_bar=false",
              "teacher.name=cnn_small", f"teacher.checkpoint={slice_teacher}", "student.name=cnn_tiny", *extra)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["method"] == name.removesuffix("_btkd") and summary["rows_teacher_wrong"] > 0
    assert 10 < summary["best_acc"] <= 100
    assert Path(tmp_path / name / "best.pt").is_file()


CIFAR_PAIRS = sorted(p.parent.name for p in (Path(__file__).resolve().parents[2] / "beyondkd" / "configs" / "cifar100").glob("*/pair.yaml"))


@pytest.mark.parametrize("pair", CIFAR_PAIRS)
def test_cifar100_pair_configs_validate(pair):
    from beyondkd.distillers import get_distiller_class, validate_params
    from beyondkd.models.registry import get_spec

    for name in CONFIGS:
        cfg = load_config(f"configs/cifar100/{pair}/{name}.yaml")
        assert cfg.method.name == name.removesuffix("_btkd") and cfg.train.epochs == 240
        assert (parse_bias(cfg.method.bias) is not None) == name.endswith("_btkd")
        validate_params(get_distiller_class(cfg.method.name), cfg.method.params)
    for net in (cfg.student.name, cfg.teacher.name):  # CRD reads the `pool` feature of both
        assert "pool" in get_spec(net).feature_points


@pytest.mark.slow
@pytest.mark.parametrize("pair", CIFAR_PAIRS)
def test_cifar100_crd_builds_for_every_pair(pair):
    cfg = load_config(f"configs/cifar100/{pair}/crd_btkd.yaml")
    context = DistillerContext(num_classes=100, in_channels=3, image_size=32, num_samples=50_000)
    d = build_distiller("crd", build_model(cfg.student.name, 100, 3), build_model(cfg.teacher.name, 100, 3),
                        cfg.method.params, parse_bias(cfg.method.bias), context)
    assert d.memory_student.shape == (50_000, 128)
