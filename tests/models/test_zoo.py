"""The CIFAR and ImageNet model zoo: sizes, forward/backward, feature points, input channels."""

from __future__ import annotations

import pytest
import torch

from beyondkd.models import FeatureHooks, build_model, count_parameters, get_spec, model_names
from beyondkd.models.registry import model_cost

ZOO = [n for n in model_names() if get_spec(n).family in ("cifar", "imagenet")]
# the biggest networks: forward+backward on CPU takes seconds each, so CI skips them
SLOW = {"resnet50_cifar", "resnet101_cifar", "resnet50_imagenet", "resnet101_imagenet", "vgg16_imagenet"}

# (name, classes, parameters in millions) as reported by the field (CRD, mdistiller, torchvision)
KNOWN_SIZES = [
    ("resnet18_imagenet", 1000, 11.69),
    ("resnet50_imagenet", 1000, 25.56),
    ("mobilenetv1_imagenet", 1000, 4.23),
    ("mobilenetv2_imagenet", 1000, 3.50),
    ("resnet32x4", 100, 7.43),
    ("resnet8x4", 100, 1.23),
    ("resnet56", 100, 0.86),
    ("resnet110", 100, 1.74),
    ("wrn_40_2", 100, 2.26),
    ("wrn_16_2", 100, 0.70),
    ("wrn_40_1", 100, 0.57),
    ("vgg13", 100, 9.46),
    ("vgg8", 100, 3.96),
    ("resnet50_cifar", 100, 23.71),
    ("mobilenetv2_x0_5", 100, 0.81),
    ("shufflenetv1", 100, 0.95),
    ("shufflenetv2", 100, 1.36),
]


def test_zoo_has_the_shared_names():
    expected = set(
        "resnet8 resnet14 resnet20 resnet32 resnet44 resnet56 resnet110 resnet8x4 resnet32x4 resnet18_cifar "
        "resnet34_cifar resnet50_cifar resnet101_cifar wrn_16_1 wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11 vgg13 vgg16 "
        "vgg19 mobilenetv2 mobilenetv2_x0_5 shufflenetv1 shufflenetv2 resnet18_imagenet resnet34_imagenet "
        "resnet50_imagenet resnet101_imagenet mobilenetv1_imagenet mobilenetv2_imagenet shufflenetv2_imagenet "
        "vgg16_imagenet".split()
    )
    assert expected <= set(ZOO)


@pytest.mark.parametrize("name,classes,millions", KNOWN_SIZES)
def test_parameter_counts_match_the_field(name, classes, millions):
    params, _ = model_cost(name, classes, flops=False)
    assert params / 1e6 == pytest.approx(millions, abs=0.006 * max(1.0, millions))


def test_meta_cost_equals_real_model_cost():
    from beyondkd.models import count_flops

    real = build_model("resnet8x4", 100)
    assert model_cost("resnet8x4", 100) == (count_parameters(real), count_flops(real, 32, 3))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ZOO]
)
def test_forward_backward_native_size(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    batch = 1 if spec.family == "imagenet" else 2
    model = build_model(name, num_classes=10)
    out = model(torch.randn(batch, 3, spec.input_size, spec.input_size))
    assert out.shape == (batch, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ZOO)
def test_feature_points_resolve_with_sane_shapes(name):
    spec = get_spec(name)
    for required in ("stage1", "stage2", "stage3", "pool"):
        assert required in spec.feature_points, f"{name} lacks {required}"
    with torch.device("meta"):
        model = build_model(name, num_classes=10, in_channels=1)  # shapes only: no memory, no compute
        x = torch.zeros(2, 1, spec.input_size, spec.input_size)
    hooks = FeatureHooks(model, list(spec.feature_points))
    out = model(x)
    assert out.shape == (2, 10)  # and the stem took 1 channel
    f = hooks.features
    assert set(f) == set(spec.feature_points)
    assert f["pool"].dim() == 2 and f["pool"].shape[0] == 2
    stages = sorted(k for k in f if k.startswith("stage"))
    sides = [f[k].shape[-1] for k in stages]
    assert all(f[k].dim() == 4 for k in stages) and sides == sorted(sides, reverse=True)
    for key in f:
        if key.startswith("preact_"):
            assert f[key].shape == f[key.removeprefix("preact_")].shape
    hooks.remove()


@pytest.mark.parametrize("name", ["resnet18_cifar", "vgg8", "shufflenetv1", "mobilenetv1_imagenet", "resnet18_imagenet"])
def test_preact_points_are_before_the_relu(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    model = build_model(name, 10).eval()
    hooks = FeatureHooks(model, ["stage2", "preact_stage2"])
    with torch.no_grad():
        model(torch.randn(1, 3, spec.input_size, spec.input_size))
    pre, post = hooks.features["preact_stage2"], hooks.features["stage2"]
    assert (pre < 0).any() and torch.equal(pre.relu(), post)


def test_wrn_preact_is_the_next_batch_norm_output():
    model = build_model("wrn_16_2", 10).eval()
    hooks = FeatureHooks(model, ["stage1", "preact_stage1", "stage3", "preact_stage3"])
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    f = hooks.features
    assert torch.allclose(f["preact_stage1"], model.block2.layer[0].bn1(f["stage1"]))
    assert torch.allclose(f["preact_stage3"], model.bn1(f["stage3"]))


def test_imagenet_wrapper_replaces_stem_for_grey_images():
    model = build_model("resnet18_imagenet", 5, in_channels=1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64 and model.conv1.stride == (2, 2)
    assert model.fc.out_features == 5


def test_models_cli_lists_names_params_and_macs(capsys):
    from beyondkd.cli.main import main

    import json

    assert main(["models", "--family", "cifar", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"wrn_40_2", "resnet32x4", "mobilenetv2_x0_5", "shufflenetv2"} <= set(rows)
    assert "resnet18_imagenet" not in rows
    r = rows["resnet32x4"]
    assert (r["classes"], round(r["params"] / 1e6, 3), round(r["macs"] / 1e6, 1), r["input_size"]) == (100, 7.434, 1083.0, 32)
    assert main(["models", "--family", "cifar"]) == 0  # the table shows the same numbers
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("resnet32x4 "))
    assert line.split()[1:5] == ["cifar", "7.434", "1083.0", "32"]
