"""The feature methods as Distillers: points, connectors, gradients, plug-in, checkpoints, configs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from beyondkd.bias.loss import BiasConfig
from beyondkd.bias.schedule import Progress
from beyondkd.config import load_config
from beyondkd.data.base import Batch
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.engine.build import parse_bias
from beyondkd.errors import ConfigError
from beyondkd.models.registry import build_model

METHODS = ["fitnet", "at", "sp", "rkd", "ofd", "reviewkd", "indistill"]
#: the modules each method adds to the student's parameter group
CONNECTORS = {"fitnet": "regressors", "ofd": "connectors", "reviewkd": "abfs"}
PAIRS = [("resnet8", "resnet20", 32), ("cnn_tiny", "cnn_small", 28)]


def _build(method, student="resnet8", teacher="resnet20", size=32, params=None, bias=None, in_channels=1, seed=0):
    torch.manual_seed(seed)
    s = build_model(student, 10, in_channels) if isinstance(student, str) else student
    t = build_model(teacher, 10, in_channels) if isinstance(teacher, str) else teacher
    ctx = DistillerContext(num_classes=10, in_channels=in_channels, image_size=size, num_samples=64)
    return build_distiller(method, s, t, params or {}, bias, ctx)


def _batch(n=6, size=32, channels=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n), None)


@pytest.mark.parametrize("student,teacher,size", PAIRS)
@pytest.mark.parametrize("method", METHODS)
def test_gradient_reaches_student_and_connectors_never_the_teacher(method, student, teacher, size):
    d = _build(method, student, teacher, size)
    assert d.teacher_logits_only is False
    out = d.training_step(_batch(size=size), Progress(0, 10, 0, 2))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.terms["feat"] > 0
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in d.teacher.parameters())
    first_conv = next(m for m in d.student.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    if method in CONNECTORS:
        connector = getattr(d, CONNECTORS[method])
        grads = [p.grad for p in connector.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        # connectors train with the student (default group) and the teacher is in no group
        group = d.param_groups()["student"]
        assert all(any(p is q for q in group) for p in connector.parameters())
    teacher_ids = {id(p) for p in d.teacher.parameters()}
    assert not any(id(p) in teacher_ids for p in d.param_groups()["student"])


@pytest.mark.parametrize("method", ["fitnet", "at", "sp", "rkd", "ofd", "reviewkd"])
def test_plugin_adds_the_bias_aware_logit_term_beside_the_feature_term(method):
    batch, progress = _batch(), Progress(5, 10, 1, 2)
    alone = _build(method).training_step(batch, progress)
    both = _build(method, bias=BiasConfig()).training_step(batch, progress)
    assert set(alone.terms) == {"ce", "feat"}
    assert {"ce", "kd_easy", "kd_hard", "feat"} <= set(both.terms)
    assert torch.allclose(alone.terms["feat"], both.terms["feat"])  # the feature term is not split
    assert "rows_right" in both.stats
    total = sum(v for k, v in both.terms.items())
    assert torch.allclose(both.loss.detach(), total, rtol=1e-5)
    # an explicit logit KD weight without the plug-in is plain KD
    kd = _build(method, params={"kd_weight": 0.5}).training_step(batch, progress)
    assert set(kd.terms) == {"ce", "kd", "feat"} and kd.terms["kd"] > 0


def test_features_equal_give_zero_feature_term_for_relational_and_attention_methods():
    # a teacher identical to the student: AT, SP and RKD transfer nothing
    for method in ("at", "sp", "rkd"):
        s = build_model("resnet8", 10, 1)
        t = build_model("resnet8", 10, 1)
        t.load_state_dict(s.state_dict())
        s.eval()  # same BN behaviour as the (eval) teacher
        d = _build(method, s, t)
        d.student.eval()
        out = d.training_step(_batch(), Progress(0, 1))
        assert float(out.terms["feat"]) == pytest.approx(0.0, abs=1e-5), method


def test_indistill_curriculum_then_kd():
    d = _build("indistill", params={"curriculum_epochs": [1, 2, 0]})
    assert [d.active_layer(e) for e in range(4)] == [0, 1, 1, None]
    b = _batch()
    warm = d.training_step(b, Progress(0, 10, 1, 4))
    assert float(warm.stats["curriculum_layer"]) == 1.0 and set(warm.terms) == {"ce", "feat"}
    assert float(warm.terms["ce"]) == 0.0  # the paper's warm-up is the feature loss only
    warm.loss.backward()
    # only layers up to stage2 receive gradient while stage2 is distilled
    assert d.student.layer3[0].conv1.weight.grad is None and d.student.layer2[0].conv1.weight.grad is not None
    kd = d.training_step(b, Progress(0, 10, 3, 4))
    assert set(kd.terms) == {"ce", "kd"}
    with_bias = _build("indistill", params={"curriculum_epochs": [0, 0, 0]}, bias=BiasConfig())
    assert {"kd_easy", "kd_hard"} <= set(with_bias.training_step(b, Progress(0, 10, 0, 1)).terms)


def test_indistill_keeps_the_l1_largest_teacher_filters():
    # teacher resnet8x4 (stage widths 64/128/256) pruned to the student's resnet8 (16/32/64)
    d = _build("indistill", "resnet8", "resnet8x4")
    w = d.teacher.layer3[0].conv2.weight
    expected = torch.argsort(w.abs().flatten(1).sum(1), descending=True)[:64].sort().values
    assert torch.equal(d.kept2, expected)
    # explicit points wider than the teacher's stay an error; default points are paired by width
    # (tests/distillers/test_pair_points.py)
    with pytest.raises(ConfigError, match="pruning cannot widen"):
        _build("indistill", "resnet8x4", "resnet8", params={"student_points": ["stage1", "stage2", "stage3"],
                                                           "teacher_points": ["stage1", "stage2", "stage3"]})


def test_ofd_margins_come_from_the_teacher_bn_before_the_relu():
    from beyondkd.losses.ofd import margin_from_bn

    d = _build("ofd")
    bn = d.teacher.layer3[2].bn2  # preact_stage3 of resnet20 = layer3.2.act_out:in
    assert torch.allclose(d.margin2, margin_from_bn(bn.weight, bn.bias))
    assert d.stage_weights == [0.25, 0.5, 1.0]


def _tv_resnet18():
    return torchvision.models.resnet18(num_classes=10)


TV_POINTS = {
    "fitnet": (["layer2"], ["layer2"]),
    "at": (["layer1", "layer2", "layer3"], ["layer2", "layer3", "layer4"]),
    "sp": (["layer3"], ["layer4"]),
    "rkd": (["flatten"], ["avgpool"]),
    "ofd": (["layer3.0.act_out:in"], ["layer4.1.relu:in"]),
    "reviewkd": (["layer2", "layer3", "flatten"], ["layer3", "layer4", "avgpool"]),
    "indistill": (["layer2", "layer3"], ["layer2", "layer3"]),
}


@pytest.mark.parametrize("method", METHODS)
def test_torchvision_teacher_through_module_name_points(method):
    s_points, t_points = TV_POINTS[method]
    student = build_model("resnet8", 10, 3)
    d = _build(method, student, _tv_resnet18(), 32, params={"student_points": s_points, "teacher_points": t_points}, in_channels=3)
    out = d.training_step(_batch(channels=3), Progress(0, 10, 0, 1))
    assert torch.isfinite(out.loss) and float(out.terms["feat"]) > 0
    out.loss.backward()
    assert student.conv1.weight.grad is not None


def test_model_without_spec_needs_explicit_points():
    with pytest.raises(ConfigError, match="student_points|teacher_points"):
        _build("fitnet", "resnet8", _tv_resnet18(), 32, in_channels=3)
    with pytest.raises(ConfigError, match="not found"):
        _build("fitnet", params={"student_points": ["layer9"], "teacher_points": ["layer2"]})
    with pytest.raises(ConfigError, match="same number"):
        _build("at", params={"student_points": ["stage1"], "teacher_points": ["stage1", "stage2"]})


@pytest.mark.parametrize("method", ["fitnet", "ofd", "reviewkd", "indistill"])
def test_connectors_are_saved_and_restored(method):
    d = _build(method, params={"curriculum_epochs": [1, 1, 1]} if method == "indistill" else None)
    opt = torch.optim.SGD([p for g in d.param_groups().values() for p in g], lr=0.5)
    d.training_step(_batch(), Progress(0, 10, 0, 2)).loss.backward()
    opt.step()
    state = d.checkpoint_state()
    assert not any(k.startswith("teacher.") for k in state)
    extra = [k for k in state if not k.startswith("student.")]
    assert extra  # connectors, margins or kept-channel indices
    fresh = _build(method, seed=123, params={"curriculum_epochs": [1, 1, 1]} if method == "indistill" else None)
    fresh.load_checkpoint_state(state)
    restored = fresh.checkpoint_state()
    for k in state:
        assert torch.equal(state[k], restored[k]), k


CONFIGS = [f"{m}{suffix}.yaml" for m in METHODS for suffix in ("", "_btkd")]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_validates_and_builds(name):
    cfg = load_config(name)
    assert cfg.method.name in METHODS
    assert (cfg.method.bias is not None) == name.endswith("_btkd.yaml")
    assert cfg.data.name == "fashion_mnist" and cfg.student.name == "resnet8" and cfg.teacher.name == "resnet20"
    d = _build(cfg.method.name, cfg.student.name, cfg.teacher.name, 28, params=cfg.method.params,
               bias=parse_bias(cfg.method.bias))
    out = d.training_step(_batch(size=28), Progress(0, 10, 0, cfg.train.epochs))
    assert torch.isfinite(out.loss)


def test_bad_params_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown parameter 'beta'"):
        _build("at", params={"beta": 3})
    with pytest.raises(ConfigError, match="curriculum_epochs"):
        _build("indistill", params={"curriculum_epochs": [1]})


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_one_and_huge_inputs_stay_finite(method):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    d = _build(method, "cnn_tiny", "cnn_small", 28, bias=BiasConfig())

    @settings(max_examples=6, deadline=None)
    @given(st.integers(1, 2), st.floats(-1e4, 1e4, allow_nan=False, width=32))
    def check(n, scale):
        b = _batch(n=n, size=28)
        b.images.mul_(scale)
        d.zero_grad(set_to_none=True)
        out = d.training_step(b, Progress(3, 10, 1, 2))
        assert torch.isfinite(out.loss), (n, scale)
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in d.parameters() if p.grad is not None)

    check()


@pytest.mark.parametrize("method,s_points", [("fitnet", ["layer2"]), ("ofd", ["layer2.1.relu:in", "layer3.1.relu:in"]),
                                             ("reviewkd", ["layer2", "layer3", "avgpool"])])
def test_torchvision_student_through_module_name_points(method, s_points):
    t_points = {"fitnet": ["stage2"], "ofd": ["preact_stage2", "preact_stage3"], "reviewkd": ["stage2", "stage3", "pool"]}[method]
    student = _tv_resnet18()
    d = _build(method, student, build_model("resnet20", 10, 3), 32,
               params={"student_points": s_points, "teacher_points": t_points}, in_channels=3)
    out = d.training_step(_batch(channels=3), Progress(0, 10, 0, 1))
    out.loss.backward()
    assert torch.isfinite(out.loss) and student.conv1.weight.grad is not None
    assert all(p.grad is None for p in d.teacher.parameters())


def test_indistill_selection_equals_the_pruned_teacher_layer():
    # the paper applies the pruned layer to the unpruned teacher's input; for conv-BN-ReLU-pool
    # this is exactly the kept channels of the teacher's feature map
    d = _build("indistill", "cnn_tiny", "cnn_small", 28)
    teacher = d.teacher
    block = teacher.stage2[0]  # conv, bn, relu
    kept = d.kept1
    conv = nn.Conv2d(block[0].in_channels, len(kept), 3, 1, 1, bias=False)
    conv.weight.data = block[0].weight.data[kept].clone()
    bn = nn.BatchNorm2d(len(kept)).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data = getattr(block[1], name).data[kept].clone()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        inp = teacher.stage1(x)
        pruned = nn.functional.max_pool2d(torch.relu(bn(conv(inp))), 2)
        full = teacher.stage2(inp)
    assert torch.allclose(pruned, full[:, kept], atol=1e-6)
    norms = block[0].weight.abs().flatten(1).sum(1)
    assert norms[kept].min() >= norms[[i for i in range(len(norms)) if i not in kept.tolist()]].max()
