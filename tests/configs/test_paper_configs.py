"""Every packaged CIFAR-10/100 and ImageNet config loads and validates without data."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from beyondkd.config import PACKAGE_CONFIGS, load_config
from beyondkd.data.cifar import CIFAR10_INFO, CIFAR100_INFO
from beyondkd.data.image_folder import IMAGENET_INFO
from beyondkd.data.registry import get_dataset_spec
from beyondkd.distillers.registry import get_distiller_class, validate_params
from beyondkd.engine.build import parse_bias
from beyondkd.models import build_model, get_spec

INFO = {"cifar10": CIFAR10_INFO, "cifar100": CIFAR100_INFO, "imagenet": IMAGENET_INFO}
FAMILY = {"cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet"}
CONFIGS = sorted(p for ds in INFO for p in (PACKAGE_CONFIGS / ds).rglob("*.yaml"))

BTKD_TABLE1 = {
    ("resnet50_cifar", "resnet18_cifar"), ("resnet101_cifar", "resnet34_cifar"), ("wrn_40_2", "wrn_16_2"),
    ("vgg13", "vgg8"), ("resnet50_cifar", "mobilenetv2_x0_5"), ("vgg13", "mobilenetv2_x0_5"),
    ("resnet50_cifar", "shufflenetv1"), ("wrn_40_2", "shufflenetv1"),
}
SLKD_TABLES_2_3 = {
    ("resnet32x4", "resnet8x4"), ("resnet56", "resnet8"), ("wrn_40_2", "wrn_40_1"), ("wrn_40_2", "wrn_16_2"),
    ("vgg13", "vgg11"), ("vgg13", "vgg8"), ("resnet32x4", "shufflenetv2"), ("resnet32x4", "shufflenetv1"),
    ("resnet50_cifar", "mobilenetv2_x0_5"), ("vgg13", "mobilenetv2_x0_5"), ("wrn_40_2", "shufflenetv1"),
}
BTKD_IMAGENET = {("resnet34_imagenet", "resnet18_imagenet"), ("resnet50_imagenet", "mobilenetv1_imagenet")}


@functools.lru_cache(maxsize=None)
def _output_shape(name: str, ds: str) -> tuple[int, ...]:
    """Logit shape of ``name`` built for dataset ``ds`` (meta device: shapes only, no memory)."""
    info = INFO[ds]
    with torch.device("meta"):
        model = build_model(name, info.num_classes, info.in_channels)
        return tuple(model(torch.zeros(1, info.in_channels, info.image_size, info.image_size)).shape)


def _pairs(ds: str) -> set[tuple[str, str]]:
    return {tuple(p.name.split("-")) for p in (PACKAGE_CONFIGS / ds).iterdir() if p.is_dir() and "-" in p.name}


def test_the_pairs_of_the_papers_are_all_there():
    assert _pairs("cifar100") == BTKD_TABLE1 | SLKD_TABLES_2_3
    assert _pairs("cifar10") == BTKD_TABLE1
    assert _pairs("imagenet") == BTKD_IMAGENET
    for ds in INFO:
        for teacher, student in _pairs(ds):
            for method in ("pair", "kd", "kd_btkd"):
                assert (PACKAGE_CONFIGS / ds / f"{teacher}-{student}" / f"{method}.yaml").is_file()
            assert (PACKAGE_CONFIGS / ds / "teachers" / f"{teacher}.yaml").is_file()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PACKAGE_CONFIGS)))
def test_config_validates_without_data(path: Path):
    ds = path.relative_to(PACKAGE_CONFIGS).parts[0]
    cfg = load_config(str(path))
    info = INFO[ds]
    assert cfg.data.name == ds and get_dataset_spec(ds).name == ds
    nets = [n for n in (cfg.model, cfg.student, cfg.teacher) if n is not None]
    assert bool(nets) == (path.name != "base.yaml")  # only the shared recipe names no network
    for net in nets:
        assert get_spec(net.name).family == FAMILY[ds], f"{net.name} is not a {FAMILY[ds]} model"
        assert _output_shape(net.name, ds) == (1, info.num_classes)
    if cfg.teacher is not None:
        assert cfg.teacher.checkpoint == f"runs/{ds}_teacher_{cfg.teacher.name}/best.pt"
        teacher_cfg = load_config(str(PACKAGE_CONFIGS / ds / "teachers" / f"{cfg.teacher.name}.yaml"))
        assert teacher_cfg.name == f"{ds}_teacher_{cfg.teacher.name}"
    if not nets:
        return
    method = cfg.method.name or ("vanilla" if cfg.model is not None else "kd")
    validate_params(get_distiller_class(method), cfg.method.params)
    parse_bias(cfg.method.bias)


@pytest.mark.parametrize("ds", ["cifar10", "cifar100"])
def test_cifar_recipe(ds):
    for teacher, student in _pairs(ds):
        cfg = load_config(f"configs/{ds}/{teacher}-{student}/kd.yaml")
        light = student.startswith(("mobilenet", "shufflenet"))
        assert cfg.train.optimizer.lr == (0.01 if light else 0.05)
        assert (cfg.data.batch_size, cfg.train.epochs, cfg.train.optimizer.weight_decay) == (64, 240, 5e-4)
        assert cfg.train.scheduler.name == "multistep" and cfg.train.scheduler.milestones == [150, 180, 210]
        assert cfg.method.params == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
        btkd = load_config(f"configs/{ds}/{teacher}-{student}/kd_btkd.yaml")
        assert btkd.method.bias == {} and btkd.method.params == cfg.method.params and btkd.name != cfg.name


def test_imagenet_recipe():
    for teacher, student in _pairs("imagenet"):
        cfg = load_config(f"configs/imagenet/{teacher}-{student}/kd.yaml")
        assert cfg.method.params == {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}
        assert cfg.train.epochs == 100 and cfg.train.scheduler.milestones == [30, 60, 90]
        assert cfg.train.optimizer.weight_decay == 1e-4
        assert cfg.train.optimizer.lr / cfg.data.batch_size == pytest.approx(0.1 / 256)


#: the methods of BTKD Tables 2-3 (ImageNet), each a config of both ImageNet pairs
IMAGENET_TABLE_METHODS = ("at", "ofd", "crd", "reviewkd", "indistill", "kd", "dkd", "ctkd", "kd_btkd")


def test_imagenet_pairs_have_every_method_of_btkd_tables_2_and_3():
    for teacher, student in _pairs("imagenet"):
        folder = PACKAGE_CONFIGS / "imagenet" / f"{teacher}-{student}"
        assert {p.stem for p in folder.glob("*.yaml")} >= set(IMAGENET_TABLE_METHODS)
        assert (PACKAGE_CONFIGS / "imagenet" / "teachers" / f"{student}.yaml").is_file()  # the student row (CE)
        for m in IMAGENET_TABLE_METHODS:
            cfg = load_config(str(folder / f"{m}.yaml"))
            assert cfg.train.epochs == 100 and cfg.data.batch_size == 512 and cfg.train.optimizer.lr == 0.2


def test_sequential_slkd_configs_train_the_student_as_long_as_parallel_slkd():
    for ds in ("cifar10", "cifar100"):
        for teacher, student in _pairs(ds):
            par = load_config(f"configs/{ds}/{teacher}-{student}/slkd.yaml")
            seq = load_config(f"configs/{ds}/{teacher}-{student}/slkd_sequential.yaml")
            assert seq.method.params == {**par.method.params, "mode": "sequential", "sl_epochs": par.train.epochs}
            assert seq.train.epochs == 2 * par.train.epochs


def test_run_names_are_unique():
    names = [load_config(str(p)).name for p in CONFIGS if p.name not in ("pair.yaml", "base.yaml")]
    assert len(names) == len(set(names))
