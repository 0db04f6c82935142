"""The teacher batch norm behind each pre-ReLU point (OFD's margins), checked on every registered model.

The expectation is computed here independently, from the order in which modules run on one
random input: the last ``BatchNorm2d`` executed before the hooked point, shortcut branches
(``downsample``/``shortcut``) left out. If that BN does not have the feature's width (e.g.
ShuffleNetV2's concatenation of a passed-through half and the branch), there is no BN to take.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.distillers.feature_base import producing_module
from beyondkd.models.features import resolve_feature_point
from beyondkd.models.registry import build_model, get_spec, model_names

PREACT_MODELS = [n for n in model_names() if any(p.startswith("preact_stage") for p in get_spec(n).feature_points)]


def _model_and_example(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model in eval mode and the smallest random batch it runs on (which BN runs where
    does not depend on the image size; small inputs keep this test fast)."""
    torch.manual_seed(0)
    channels = 1 if get_spec(name).family == "mnist" else 3
    model = build_model(name, 10, channels).eval()
    for side in (8, 32):
        x = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                model(x)
            return model, x
        except RuntimeError:  # a fixed-size pooling or a pool below 1 px
            continue
    raise AssertionError(f"{name} runs on neither 8 nor 32 px")


def _expected_bn(model: nn.Module, point: str, x: torch.Tensor) -> tuple[nn.Module | None, int]:
    """(the last main-path BN run before ``point``, or None if its width differs; the feature's channels)."""
    path = resolve_feature_point(model, point)
    module_path, _, which = path.partition(":")
    events: list[tuple[str, object]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_hook(lambda mod, i, o, name=name: events.append(("bn", (name, mod)))))
    target = model.get_submodule(module_path)
    if which == "in":
        handles.append(target.register_forward_pre_hook(lambda mod, i: events.append(("point", i[0].shape[1]))))
    else:
        handles.append(target.register_forward_hook(lambda mod, i, o: events.append(("point", o.shape[1]))))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    last = max(k for k, (kind, _) in enumerate(events) if kind == "point")
    channels = events[last][1]
    bns = [v for kind, v in events[:last] if kind == "bn" and not {"downsample", "shortcut"} & set(v[0].split("."))]
    bn = bns[-1][1] if bns else None
    return (bn if bn is not None and bn.num_features == channels else None), channels


@pytest.mark.parametrize("name", PREACT_MODELS)
def test_bn_before_every_preact_point_is_the_one_that_runs_just_before_it(name):
    model, x = _model_and_example(name)
    points = sorted(p for p in get_spec(name).feature_points if p.startswith("preact_stage"))
    for point in points:
        expected, channels = _expected_bn(model, point, x)
        found = producing_module(model, point, nn.BatchNorm2d, channels, "num_features", x)
        assert found is expected, f"{name} {point}"


def test_ofd_vgg13_teacher_takes_each_blocks_last_bn():
    from beyondkd.losses.ofd import margin_from_bn

    torch.manual_seed(0)
    s, t = build_model("vgg8", 10, 3), build_model("vgg13", 10, 3)
    blocks = [t.block1, t.block2, t.block3, t.block4]
    with torch.no_grad():  # a distinct margin per block (blocks 3 and 4 both have 512 channels)
        for k, block in enumerate(blocks):
            block[-1].weight.fill_(0.5 + k)
            block[-1].bias.fill_(-0.1 * k)
    ctx = DistillerContext(num_classes=10, in_channels=3, image_size=32, num_samples=64)
    d = build_distiller("ofd", s, t, {}, None, ctx)
    for k, block in enumerate(blocks):
        assert torch.allclose(getattr(d, f"margin{k}"), margin_from_bn(block[-1].weight, block[-1].bias).float())


def test_producing_conv_of_vgg_stage3_is_block3s():
    vgg = build_model("vgg13", 10, 3)
    x = torch.zeros(2, 3, 32, 32)
    assert producing_module(vgg, "preact_stage3", nn.Conv2d, 512, "out_channels", x) is vgg.block3[3]
    assert producing_module(vgg, "stage3", nn.Conv2d, 512, "out_channels", x) is vgg.block3[3]
