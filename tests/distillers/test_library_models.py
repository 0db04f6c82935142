"""Every feature method trains on timm and torchvision pairs, or says in one line why it cannot."""

from __future__ import annotations

import copy

import pytest
import torch

from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.errors import ConfigError
from beyondkd.models.registry import build_model

pytest.importorskip("timm")

METHODS = ["fitnet", "at", "sp", "rkd", "crd", "ofd", "reviewkd", "indistill"]
PARAMS = {"crd": {"nce_k": 4}}
PAIRS = {"timm": ("timm:resnet18", "timm:resnet10t"), "torchvision": ("torchvision:resnet34", "resnet18_imagenet")}
SIDE, CLASSES, N = 32, 5, 4


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    """Random-init (teacher, student) of each pair, built once; tests take deep copies."""
    torch.manual_seed(0)
    return {k: (build_model(t, CLASSES), build_model(s, CLASSES)) for k, (t, s) in PAIRS.items()}


def _batch(step: int) -> Batch:
    g = torch.Generator().manual_seed(step)
    return Batch(torch.randn(N, 3, SIDE, SIDE, generator=g), torch.randint(0, CLASSES, (N,), generator=g),
                 torch.arange(N) + N * step, None)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_two_steps(method, pair, built):
    teacher, student = (copy.deepcopy(m) for m in built[pair])
    ctx = DistillerContext(num_classes=CLASSES, in_channels=3, image_size=SIDE, num_samples=4 * N)
    d = build_distiller(method, student, teacher, PARAMS.get(method, {}), None, ctx)
    params = d.param_groups()["student"]
    before = [p.detach().clone() for p in params]
    teacher_before = [p.detach().clone() for p in d.teacher.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    d.train()
    for step in range(2):
        out = d.training_step(_batch(step), Progress(step, 2, 0, 1))
        assert torch.isfinite(out.loss) and float(out.terms["crd" if method == "crd" else "feat"]) > 0
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
    assert all(torch.equal(a, p) for a, p in zip(teacher_before, d.teacher.parameters()))


def test_ofd_without_provable_preact_points_says_so():
    torch.manual_seed(0)
    teacher, student = build_model("timm:test_resnet", CLASSES), build_model("timm:test_efficientnet", CLASSES)
    ctx = DistillerContext(num_classes=CLASSES, in_channels=3, image_size=SIDE, num_samples=8)
    with pytest.raises(ConfigError, match=r"student \(EfficientNet\) has no feature point 'preact_stage1'.*student_points") as e:
        build_distiller("ofd", student, teacher, {}, None, ctx)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["fitnet", "reviewkd"])
def test_transformer_tokens_are_refused_for_map_methods(method):
    torch.manual_seed(0)
    teacher, student = build_model("timm:test_vit", CLASSES), build_model("timm:test_resnet", CLASSES)
    ctx = DistillerContext(num_classes=CLASSES, in_channels=3, image_size=160, num_samples=8)
    with pytest.raises(ConfigError, match=r"reads .*\(N, C, H, W\) maps, but teacher point 'stage\d' has shape \(N, 101, 64\)"):
        build_distiller(method, student, teacher, {}, None, ctx)
