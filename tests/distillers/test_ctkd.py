"""CTKD / CTKD+DKD distillers: the learned temperature, its reversed gradient, the plug-in."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.bias.loss import bias_config
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.losses.ctkd import bounded_temperature
from beyondkd.losses.dkd import dkd_loss
from beyondkd.losses.kd import kd_kl
from beyondkd.models import build_model
from tests.distillers._zoo_helpers import batch, grads_ok, make, progress


@pytest.mark.parametrize("method", ["ctkd", "ctkd_dkd"])
@pytest.mark.parametrize("mode", ["global", "instance"])
@pytest.mark.parametrize("bias", [None, "paper"])
def test_gradient_reaches_student_and_temperature_module_not_teacher(method, mode, bias):
    d = make(method, {"mode": mode, "cos_epochs": 2, "warmup_epochs": 1} if method == "ctkd_dkd" else {"mode": mode, "cos_epochs": 2}, bias)
    out = d.training_step(batch(), progress(epoch=1))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads_ok(d)
    temp_grads = [p.grad for p in d.temperature_module.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in temp_grads)
    names = {n for n, _ in d.named_parameters() if n.startswith("temperature_module.")}
    group = {id(p) for p in d.param_groups()["student"]}
    assert names and all(id(p) in group for n, p in d.named_parameters() if n in names)
    assert any(k.startswith("temperature_module.") for k in d.checkpoint_state())
    assert 1.0 <= out.stats["temperature_min"].item() <= out.stats["temperature_max"].item() <= 21.0


def test_global_temperature_gradient_is_the_reversed_loss_gradient():
    """θ's gradient equals -λ · ∂L/∂θ of the same loss without the GRL (CTKD eq. 7)."""
    d = make("ctkd", {"mode": "global", "cos_epochs": 4, "ce_weight": 0.0, "kd_weight": 1.0})
    b, prog = batch(), progress(epoch=2)
    lam = d.current_lambda(prog)
    assert 0 < lam < 1
    out = d.training_step(b, prog)
    out.loss.backward()
    theta = d.temperature_module.theta.detach().clone().requires_grad_(True)
    with torch.no_grad():
        t_logits = d.teacher(b.images)
    T = bounded_temperature(theta, 1.0, 21.0)
    kd_kl(out.logits.detach(), t_logits, T).mean().backward()
    assert d.temperature_module.theta.grad.item() == pytest.approx(-lam * theta.grad.item(), rel=1e-4, abs=1e-8)


def test_ctkd_dkd_loss_is_dkd_at_the_learned_temperature():
    d = make("ctkd_dkd", {"mode": "global", "init_temperature": 5.0, "warmup_epochs": 0})
    b = batch()
    out = d.training_step(b, progress())
    with torch.no_grad():
        t = d.teacher(b.images)
        ce = torch.nn.functional.cross_entropy(out.logits, b.targets)
        expected = ce + dkd_loss(out.logits, t, b.targets, 1.0, 8.0, 5.0).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_instance_temperatures_stay_in_range_on_huge_logits():
    d = make("ctkd", {"mode": "instance", "t_min": 2.0, "t_max": 6.0})
    with torch.no_grad():
        for p in d.temperature_module.parameters():
            p.normal_(0, 10.0)
    big = torch.randn(5, 10) * 1e4
    T = d.temperature_module(big, -big, 1.0)
    assert T.shape == (5,) and torch.isfinite(T).all() and (T >= 2.0).all() and (T <= 6.0).all()


def test_plugin_rectifies_at_the_learned_temperature():
    """With rectification, the teacher the loss sees is the one rectified at T (not at 1)."""
    from beyondkd.bias.rectify import rectified_teacher_logits

    d = make("ctkd", {"mode": "global", "init_temperature": 3.0, "ce_weight": 0.0, "kd_weight": 1.0}, bias="rectify-only")
    b = batch(16)
    out = d.training_step(b, progress())
    with torch.no_grad():
        t = d.teacher(b.images)
        rect = rectified_teacher_logits(t, b.targets, 3.0, "paper")
        expected = kd_kl(out.logits, rect, 3.0).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.stats["rows_rectified"].item() > 0


def test_bad_ranges_are_one_line_errors():
    from beyondkd.errors import ConfigError

    with pytest.raises(ConfigError, match="init_temperature"):
        make("ctkd", {"init_temperature": 30.0})
    with pytest.raises(ConfigError, match="t_min"):
        make("ctkd", {"t_min": 5.0, "t_max": 2.0, "init_temperature": 3.0})



@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["ctkd", "ctkd_dkd"]), st.sampled_from(["global", "instance"]), st.sampled_from([None, "paper", "strict"]),
       st.integers(1, 3), st.integers(2, 5), st.sampled_from([1.0, 1e4]), st.integers(0, 1000))
def test_loss_and_gradients_finite_on_extreme_logits(method, mode, bias, n, c, scale, seed):
    ctx = DistillerContext(num_classes=c, in_channels=1, image_size=28, num_samples=64)
    d = build_distiller(method, build_model("cnn_tiny", c, 1), build_model("cnn_tiny", c, 1), {"mode": mode},
                        bias_config(bias) if bias else None, ctx)
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * scale).requires_grad_(True)
    t = torch.randn(n, c, generator=g) * scale
    y = torch.randint(0, c, (n,), generator=g)
    loss_at = kd_kl if method == "ctkd" else (lambda a, b, T: dkd_loss(a, b, y, 1.0, 8.0, T))
    out = d.distill_at_learned_temperature(s, t, y, progress(epoch=3), loss_at, 1.0, 1.0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(s.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in d.temperature_module.parameters() if p.grad is not None)


@pytest.mark.parametrize("method", ["ctkd", "ctkd_dkd"])
def test_student_equal_to_teacher_gives_no_distillation_term(method):
    d = make(method, {"mode": "instance", "warmup_epochs": 0} if method == "ctkd_dkd" else {"mode": "instance"}, teacher="cnn_tiny")
    d.teacher.load_state_dict(d.student.state_dict())
    d.student.eval()
    out = d.training_step(batch(), progress(epoch=3))
    assert out.terms["kd"].abs().item() < 1e-4


@pytest.mark.parametrize("cos_epochs", [2, 10])
def test_lambda_curriculum_counts_epochs_from_one_as_the_authors(cos_epochs):
    """CTKD's code calls its cosine decay with the 1-based epoch: the first epoch already has
    λ = ½(1 − cos(π/E)) > 0 and λ reaches λ_max in epoch E (0-based index E − 1)."""
    import math

    d = make("ctkd", {"mode": "global", "cos_epochs": cos_epochs})
    first = d.current_lambda(progress(epoch=0))
    assert first == pytest.approx(0.5 * (1.0 - math.cos(math.pi / cos_epochs)))
    assert first > 0.0
    assert d.current_lambda(progress(epoch=cos_epochs - 1)) == pytest.approx(1.0)
    assert d.current_lambda(progress(epoch=cos_epochs - 2)) < 1.0
    out = d.training_step(batch(), progress(epoch=0))
    assert out.stats["grl_lambda"].item() == pytest.approx(first)
