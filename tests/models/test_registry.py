"""Model registry, feature hooks and local weight files."""

from __future__ import annotations

import pytest
import torch

from beyondkd.errors import BeyondKDError, ConfigError
from beyondkd.models import FeatureHooks, build_model, count_flops, count_parameters, get_spec, model_names
from beyondkd.models.weights import load_pretrained


def test_known_parameter_counts():
    assert count_parameters(build_model("resnet32x4", 100)) == pytest.approx(7.43e6, rel=0.005)
    assert count_parameters(build_model("resnet8x4", 100)) == pytest.approx(1.23e6, rel=0.005)
    assert count_parameters(build_model("resnet56", 100)) == pytest.approx(0.86e6, rel=0.01)


@pytest.mark.parametrize("name", ["cnn_small", "cnn_tiny", "resnet8", "resnet20"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_backward_any_channels(name, in_channels):
    model = build_model(name, num_classes=7, in_channels=in_channels)
    size = get_spec(name).input_size
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_suggests():
    with pytest.raises(ConfigError, match="unknown model 'resnet9'.*did you mean"):
        build_model("resnet9", 10)


def test_flops_positive_and_ordered():
    small = count_flops(build_model("resnet8", 10), 32, 3)
    big = count_flops(build_model("resnet56", 10), 32, 3)
    assert 0 < small < big


def test_feature_hooks_by_semantic_name_and_preact():
    model = build_model("resnet8", 10, 1)
    hooks = FeatureHooks(model, ["stage1", "stage3", "preact_stage3", "pool"])
    model(torch.randn(2, 1, 28, 28))
    f = hooks.features
    assert f["stage1"].shape == (2, 16, 28, 28)
    assert f["stage3"].shape == (2, 64, 7, 7)
    assert f["pool"].shape == (2, 64)
    assert (f["preact_stage3"] < 0).any() and torch.equal(f["preact_stage3"].relu(), f["stage3"])
    hooks.remove()


def test_feature_hook_errors():
    model = build_model("cnn_tiny", 10, 1)
    with pytest.raises(ConfigError, match="not found"):
        FeatureHooks(model, ["stage9.block"])


def test_every_registered_model_builds():
    for name in model_names():
        spec = get_spec(name)
        assert spec.family and spec.input_size > 0


def test_load_pretrained_roundtrip_and_errors(tmp_path):
    src = build_model("resnet8", 10, 1)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pt")
    dst = build_model("resnet8", 10, 1)
    load_pretrained(dst, tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    # DataParallel prefix
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    load_pretrained(build_model("resnet8", 10, 1), tmp_path / "dp.pt")
    with pytest.raises(BeyondKDError, match="do not fit.*fc.weight"):
        load_pretrained(build_model("resnet8", 100, 1), tmp_path / "w.pt")
    with pytest.raises(BeyondKDError, match="not found"):
        load_pretrained(dst, tmp_path / "missing.pt")
