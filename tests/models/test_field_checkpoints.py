"""The field's CIFAR checkpoints (CRD/mdistiller ``cifar_teachers``) load into our models.

The expected key names below are written from the module structure of the CRD/mdistiller
models (their ``resnet.py``, ``resnetv2.py``, ``wrn.py``, ``vgg.py``, ``mobilenetv2.py``,
``ShuffleNetv1.py``, ``ShuffleNetv2.py``), independently of our code; the checkpoints are
written in their layout: ``{"model": state_dict, "epoch": 240, ...}``.
"""

from __future__ import annotations

import pytest
import torch

from beyondkd.errors import BeyondKDError
from beyondkd.models import build_model
from beyondkd.models.weights import KEY_MAPPINGS, load_pretrained

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in BN]


def cifar_resnet_keys(depth: int, widths: tuple[int, int, int, int]) -> list[str]:
    """mdistiller ``resnet.py``: conv1/bn1, layerK.J.{conv1,bn1,conv2,bn2,downsample.0/1}, fc."""
    n = (depth - 2) // 6
    keys = ["conv1.weight", *bn("bn1")]
    inplanes = widths[0]
    for k, planes in enumerate(widths[1:], start=1):
        for j in range(n):
            stride = 2 if (k > 1 and j == 0) else 1
            p = f"layer{k}.{j}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if stride != 1 or inplanes != planes:
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
            inplanes = planes
    return keys + ["fc.weight", "fc.bias"]


def resnetv2_keys(blocks: tuple[int, ...], bottleneck: bool) -> list[str]:
    """mdistiller ``resnetv2.py``: layerK.J.{conv1..3,bn1..3,shortcut.0/1}, linear."""
    keys = ["conv1.weight", *bn("bn1")]
    inplanes, expansion = 64, 4 if bottleneck else 1
    for k, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for j in range(count):
            stride = 2 if (k > 1 and j == 0) else 1
            p = f"layer{k}.{j}"
            for c in range(1, 4 if bottleneck else 3):
                keys += [f"{p}.conv{c}.weight", *bn(f"{p}.bn{c}")]
            if stride != 1 or inplanes != planes * expansion:
                keys += [f"{p}.shortcut.0.weight", *bn(f"{p}.shortcut.1")]
            inplanes = planes * expansion
    return keys + ["linear.weight", "linear.bias"]


def wrn_keys(depth: int, widen: int) -> list[str]:
    """mdistiller ``wrn.py``: blockK.layer.J.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc."""
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    keys = ["conv1.weight"]
    for k in (1, 2, 3):
        for j in range(n):
            p = f"block{k}.layer.{j}"
            keys += [*bn(f"{p}.bn1"), f"{p}.conv1.weight", *bn(f"{p}.bn2"), f"{p}.conv2.weight"]
            in_planes = widths[k - 1] if j == 0 else widths[k]
            if in_planes != widths[k]:
                keys.append(f"{p}.convShortcut.weight")
    return keys + [*bn("bn1"), "fc.weight", "fc.bias"]


def vgg_bn_keys(cfg: list[list[int]]) -> list[str]:
    """mdistiller ``vgg.py`` (batch_norm=True): blockK = [conv, bn, relu]*, last relu dropped; classifier."""
    keys = []
    for k, block in enumerate(cfg):
        for i in range(len(block)):
            keys += [f"block{k}.{3 * i}.weight", f"block{k}.{3 * i}.bias", *bn(f"block{k}.{3 * i + 1}")]
    return keys + ["classifier.weight", "classifier.bias"]


def mobile_half_keys() -> list[str]:
    """mdistiller ``mobilenetv2.py`` (``mobile_half``): conv1.0/1, blocks.S.J.conv.{0,1,3,4,6,7}, conv2.0/1, classifier.0."""
    keys = ["conv1.0.weight", *bn("conv1.1")]
    for s, n in enumerate((1, 2, 3, 4, 3, 3, 1)):
        for j in range(n):
            p = f"blocks.{s}.{j}.conv"
            for conv, norm in ((0, 1), (3, 4), (6, 7)):
                keys += [f"{p}.{conv}.weight", *bn(f"{p}.{norm}")]
    return keys + ["conv2.0.weight", *bn("conv2.1"), "classifier.0.weight", "classifier.0.bias"]


def shufflev1_keys() -> list[str]:
    keys = ["conv1.weight", *bn("bn1")]
    for k, n in enumerate((4, 8, 4), start=1):
        for j in range(n):
            for c in (1, 2, 3):
                keys += [f"layer{k}.{j}.conv{c}.weight", *bn(f"layer{k}.{j}.bn{c}")]
    return keys + ["linear.weight", "linear.bias"]


def shufflev2_keys() -> list[str]:
    keys = ["conv1.weight", *bn("bn1")]
    for k, n in enumerate((3, 7, 3), start=1):
        for c in range(1, 6):  # DownBlock
            keys += [f"layer{k}.0.conv{c}.weight", *bn(f"layer{k}.0.bn{c}")]
        for j in range(1, n + 1):
            for c in (1, 2, 3):
                keys += [f"layer{k}.{j}.conv{c}.weight", *bn(f"layer{k}.{j}.bn{c}")]
    return keys + ["conv2.weight", *bn("bn2"), "linear.weight", "linear.bias"]


FIELD_LAYOUTS = {
    "resnet56": cifar_resnet_keys(56, (16, 16, 32, 64)),
    "resnet110": cifar_resnet_keys(110, (16, 16, 32, 64)),
    "resnet8x4": cifar_resnet_keys(8, (32, 64, 128, 256)),
    "resnet32x4": cifar_resnet_keys(32, (32, 64, 128, 256)),
    "resnet18_cifar": resnetv2_keys((2, 2, 2, 2), False),
    "resnet50_cifar": resnetv2_keys((3, 4, 6, 3), True),
    "wrn_40_2": wrn_keys(40, 2),
    "wrn_16_1": wrn_keys(16, 1),
    "vgg8": vgg_bn_keys([[64], [128], [256], [512], [512]]),
    "vgg13": vgg_bn_keys([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]),
    "mobilenetv2_x0_5": mobile_half_keys(),
    "shufflenetv1": shufflev1_keys(),
    "shufflenetv2": shufflev2_keys(),
}


@pytest.mark.parametrize("name", sorted(FIELD_LAYOUTS))
def test_our_names_are_the_field_names(name):
    with torch.device("meta"):
        ours = set(build_model(name, 100).state_dict())
    assert ours == set(FIELD_LAYOUTS[name])
    assert set(KEY_MAPPINGS) == {"dataparallel"}  # the field's files need no renames


def _field_file(tmp_path, name: str, state: dict[str, torch.Tensor], **extra) -> str:
    folder = tmp_path / "cifar_teachers" / f"{name}_vanilla"
    folder.mkdir(parents=True)
    path = folder / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": 79.42, **extra}, path)
    return str(path)


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_1", "vgg8", "shufflenetv1"])
def test_field_checkpoint_loads_and_predicts_the_same(tmp_path, name):
    torch.manual_seed(0)
    src = build_model(name, 100).eval()
    # write the file under the field's key names, in the field's order
    own = src.state_dict()
    state = {k: own[k].clone() for k in FIELD_LAYOUTS[name]}
    path = _field_file(tmp_path, name, state, optimizer={"state": {}, "param_groups": [{"lr": 0.05}]})
    dst = build_model(name, 100, pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src(x), dst(x))


def test_field_file_variants(tmp_path):
    src = build_model("resnet8", 10)
    own = src.state_dict()
    # DataParallel prefix
    path = _field_file(tmp_path / "dp", "resnet8", {f"module.{k}": v for k, v in own.items()})
    load_pretrained(build_model("resnet8", 10), path)
    # a whole mdistiller distiller: student.* and teacher.* (student taken)
    whole = {**{f"module.student.{k}": v for k, v in own.items()}, "module.teacher.fc.weight": torch.zeros(3, 3)}
    dst = build_model("resnet8", 10)
    load_pretrained(dst, _field_file(tmp_path / "whole", "resnet8", whole))
    assert torch.equal(dst.fc.weight, src.fc.weight)
    # files older than PyTorch 0.4.1: no num_batches_tracked
    old = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    load_pretrained(build_model("resnet8", 10), _field_file(tmp_path / "old", "resnet8", old))
    # but any other missing key is still an error, on one line
    broken = {k: v for k, v in old.items() if k != "fc.bias"}
    with pytest.raises(BeyondKDError, match="1 keys missing.*fc.bias") as err:
        load_pretrained(build_model("resnet8", 10), _field_file(tmp_path / "broken", "resnet8", broken))
    assert "\n" not in str(err.value)
    with pytest.raises(BeyondKDError, match="unknown weights layout"):
        load_pretrained(build_model("resnet8", 10), path, layout="nope")
