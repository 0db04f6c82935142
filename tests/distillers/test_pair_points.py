"""Default feature-point pairing of models with different numbers / widths of stages, and the
producing-convolution search of InDistill (VGG stages end in a ReLU outside the conv block)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from beyondkd.bias.schedule import Progress
from beyondkd.config import load_config
from beyondkd.data.base import Batch
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.distillers.feature_base import deepest_pairs, producing_module
from beyondkd.errors import ConfigError
from beyondkd.models.registry import build_model


def _build(method, student, teacher, params=None, size=32, classes=10, seed=0):
    torch.manual_seed(seed)
    s = build_model(student, classes, 3)
    t = build_model(teacher, classes, 3)
    ctx = DistillerContext(num_classes=classes, in_channels=3, image_size=size, num_samples=64)
    return build_distiller(method, s, t, params or {}, None, ctx)


def _batch(n=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n), None)


@given(st.integers(0, 8), st.integers(0, 8))
def test_deepest_pairs_keep_the_deepest_points_in_order(n_s, n_t):
    pairs = deepest_pairs(n_s, n_t)
    assert len(pairs) == min(n_s, n_t)
    if pairs:
        assert pairs[-1] == (n_s - 1, n_t - 1)
    assert all(b[0] == a[0] + 1 and b[1] == a[1] + 1 for a, b in zip(pairs, pairs[1:]))


@pytest.mark.parametrize("method", ["at", "ofd", "reviewkd", "indistill"])
def test_four_stage_teacher_with_three_stage_student_pairs_the_deepest_stages_and_trains(method):
    # mobilenetv2_x0_5: 4 stages (12/16/48/160 ch); resnet8: 3 stages (16/32/64 ch)
    d = _build(method, "resnet8", "mobilenetv2_x0_5", params={"curriculum_epochs": [1, 1, 1]} if method == "indistill" else None)
    prefix = "preact_" if method == "ofd" else ""
    tail = ["pool"] if method == "reviewkd" else []
    assert d.student_points == [f"{prefix}stage{k}" for k in (1, 2, 3)] + tail
    assert d.teacher_points == [f"{prefix}stage{k}" for k in (2, 3, 4)] + tail
    student_params = [p for p in d.student.parameters()]
    before = [p.detach().clone() for p in student_params]
    opt = torch.optim.SGD(d.param_groups()["student"], lr=0.1)
    out = d.training_step(_batch(), Progress(0, 10, 0, 2))
    assert torch.isfinite(out.loss) and out.terms["feat"] > 0
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, student_params))


def test_three_stage_teacher_with_four_stage_student_drops_the_shallowest_student_stage():
    d = _build("at", "mobilenetv2_x0_5", "resnet8")
    assert d.student_points == ["stage2", "stage3", "stage4"] and d.teacher_points == ["stage1", "stage2", "stage3"]


def test_explicit_points_of_different_lengths_stay_an_error():
    with pytest.raises(ConfigError, match="3 student_points but 4 teacher_points"):
        _build("at", "resnet8", "mobilenetv2_x0_5", params={"student_points": ["stage1", "stage2", "stage3"],
                                                          "teacher_points": ["stage1", "stage2", "stage3", "stage4"]})


def test_indistill_pairs_a_wider_student_stage_with_a_deeper_wide_enough_teacher_stage():
    # resnet8x4 (64/128/256 ch) -> shufflenetv2 (116/232/464): s1 -> t2, s2 -> t3, s3 has no teacher stage
    d = _build("indistill", "shufflenetv2", "resnet8x4", params={"curriculum_epochs": [1, 1]})
    assert d.student_points == ["stage1", "stage2"] and d.teacher_points == ["stage2", "stage3"]
    assert d.unpaired_student_points == ("stage3",)
    assert [int(s[0]) <= int(t[0]) for s, t in zip(d.student_shapes, d.teacher_shapes)] == [True, True]
    # kept channels: the L1-largest filters of the last conv of teacher stage 2
    w = d.teacher.layer2[-1].conv2.weight
    assert torch.equal(d.kept0, torch.argsort(w.abs().flatten(1).sum(1), descending=True)[:116].sort().values)
    for epoch in (0, 1, 2):  # both curriculum layers, then KD
        out = d.training_step(_batch(), Progress(epoch, 30, epoch, 3))
        assert torch.isfinite(out.loss)
        out.loss.backward()


def test_indistill_with_no_wide_enough_teacher_stage_is_a_one_line_error():
    # every resnet8x4 stage (64/128/256) is wider than resnet8's widest (64) except stage1
    d = _build("indistill", "resnet8x4", "resnet8", params={"curriculum_epochs": [1]})
    assert d.student_points == ["stage1"] and d.teacher_points == ["stage3"]
    with pytest.raises(ConfigError, match="every student stage is wider") as e:
        _build("indistill", "shufflenetv2", "resnet8")
    assert "\n" not in str(e.value)


def test_producing_conv_of_a_vgg_stage_is_found_through_bn_and_relu():
    vgg = build_model("vgg8", 10, 3)
    x = torch.zeros(2, 3, 32, 32)
    assert producing_module(vgg, "stage1", nn.Conv2d, 128, "out_channels", x) is vgg.block1[0]
    assert producing_module(vgg, "preact_stage2", nn.Conv2d, 256, "out_channels", x) is vgg.block2[0]
    assert producing_module(vgg, "stage1", nn.Conv2d, 64, "out_channels", x) is None  # wrong width
    assert producing_module(vgg, "pool", nn.Conv2d, 512, "out_channels", x) is None  # through a Flatten: no


def test_indistill_vgg_teacher_prunes_the_stage_conv():
    d = _build("indistill", "mobilenetv2_x0_5", "vgg8", params={"curriculum_epochs": [1, 1, 1, 1]})
    assert d.teacher_points == ["stage1", "stage2", "stage3", "stage4"]
    w = d.teacher.block1[0].weight  # 128 filters; mobilenetv2_x0_5 stage1 has 12 channels
    assert torch.equal(d.kept0, torch.argsort(w.abs().flatten(1).sum(1), descending=True)[:12].sort().values)
    out = d.training_step(_batch(), Progress(0, 10, 0, 5))
    assert torch.isfinite(out.loss) and out.terms["feat"] > 0


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_packaged_wrn_40_2_shufflenetv1_indistill_config_builds_and_steps(dataset):
    cfg = load_config(f"configs/{dataset}/wrn_40_2-shufflenetv1/indistill.yaml")
    classes = 10 if dataset == "cifar10" else 100
    d = _build(cfg.method.name, cfg.student.name, cfg.teacher.name, params=cfg.method.params, classes=classes)
    assert all(int(s[0]) <= int(t[0]) for s, t in zip(d.student_shapes, d.teacher_shapes))
    batch = _batch()
    batch = Batch(batch.images, batch.targets % classes, batch.indices, None)
    out = d.training_step(batch, Progress(0, 10, 0, 240))
    assert torch.isfinite(out.loss) and out.terms["feat"] > 0
