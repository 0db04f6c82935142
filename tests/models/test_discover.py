"""Feature points of timm and torchvision models, found on the built model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from beyondkd.errors import ConfigError
from beyondkd.models import FeatureHooks, build_model
from beyondkd.models.discover import preact_points, trace, traced_feature_points

pytest.importorskip("timm")


def _features(model: nn.Module, points: list[str], side: int = 64) -> dict[str, torch.Tensor]:
    hooks = FeatureHooks(model, points)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)))
    hooks.remove()
    return hooks.features


def test_timm_stages_are_timms_feature_info():
    model = build_model("timm:resnet10t", 5)
    points = model.beyondkd_spec.feature_points
    info = model.feature_info
    assert points["stem"] == "act1"
    assert [points[f"stage{k}"] for k in (1, 2, 3, 4)] == [d["module"] for d in info if d["reduction"] > 2]
    assert points["pool"] == "fc:in"
    # the hooked maps have the channels and reduction timm publishes
    feats = _features(model, [f"stage{k}" for k in (1, 2, 3, 4)] + ["pool"])
    for k, d in enumerate((d for d in info if d["reduction"] > 2), start=1):
        assert feats[f"stage{k}"].shape[1:] == (d["num_chs"], 64 // d["reduction"], 64 // d["reduction"])
    assert feats["pool"].shape == (2, model.num_features)


@pytest.mark.parametrize("name", ["timm:resnet10t", "torchvision:resnet18"])
def test_preact_point_is_the_sum_before_the_last_relu(name):
    model = build_model(name, 5)
    torch.manual_seed(0)
    for m in model.modules():  # timm zero-initialises the last BN of each block: undo it
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.normal_()
    points = model.beyondkd_spec.feature_points
    stages = [f"stage{k}" for k in (1, 2, 3, 4)]
    feats = _features(model, stages + [f"preact_{s}" for s in stages])
    for s in stages:
        pre, post = feats[f"preact_{s}"], feats[s]
        assert points[f"preact_{s}"].endswith(":in")
        assert (pre < 0).any(), s  # really before the ReLU
        torch.testing.assert_close(F.relu(pre), post)


def test_torchvision_resnet_traced_points_equal_the_registry_entry():
    traced = build_model("torchvision:resnet34", 5).beyondkd_spec.feature_points
    registry = build_model("resnet34_imagenet", 5).beyondkd_spec.feature_points
    assert {k: v for k, v in traced.items() if k != "stem"} == {k: v for k, v in registry.items() if k != "stem"}


class _ReluOfSum(nn.Module):
    """A residual block ending in a functional relu of a sum (no module runs last)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + F.avg_pool2d(x, 2))


class _TwoStages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage_a = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage_b = _ReluOfSum()
        self.stage_c = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stage_c(self.stage_b(self.stage_a(x)))
        return self.fc(F.relu(x).mean((2, 3)))


def test_only_provable_preact_points_are_given():
    model = _TwoStages()
    points = traced_feature_points(model, 3)
    assert [points[f"stage{k}"] for k in (1, 2, 3)] == ["stage_a", "stage_b", "stage_c"]
    assert points["pool"] == "fc:in"
    assert points["preact_stage1"] == "stage_a.2:in"  # the ReLU module's input
    assert "preact_stage2" not in points  # ends in F.relu(... + ...): not provable
    assert points["preact_stage3"] == "stage_c"  # ends in a batch norm: linear already
    _, calls = trace(model, 3)
    assert preact_points(model, {"stage2": "stage_b"}, calls) == {}


def test_discovery_leaves_weights_statistics_and_rng_alone():
    torch.manual_seed(3)
    model = build_model("timm:resnet10t", 5)
    after_build = torch.rand(1)
    torch.manual_seed(3)
    plain = __import__("timm").create_model("resnet10t", pretrained=False, num_classes=5)
    assert torch.equal(torch.rand(1), after_build)
    for (k, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), k
    assert model.training


def test_meta_device_build_discovers_points_for_free():
    with torch.device("meta"):
        model = build_model("torchvision:resnet18", 10)
    assert model.beyondkd_spec.feature_points["stage4"] == "layer4"


def test_unknown_torchvision_name_is_one_line():
    with pytest.raises(ConfigError, match="unknown torchvision classification model 'resnet19'.*resnet18"):
        build_model("torchvision:resnet19", 10)
