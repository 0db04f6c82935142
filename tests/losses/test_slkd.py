"""SLKD's pure losses: eq. 1/3/4/5 (teacher-student loss), eq. 6 (fusion), eq. 7 (student total)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.kd import kd_kl
from beyondkd.losses.slkd import fuse_outputs, fusion_weights, slkd_student_loss, teacher_student_loss


def _logits(n, c, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


def test_teacher_student_loss_matches_the_definition():
    s, t = _logits(5, 4, 0), _logits(5, 4, 1)
    y = torch.tensor([0, 1, 2, 3, 0])
    a, T = 0.3, 2.0
    ce = -torch.log_softmax(s, 1)[torch.arange(5), y]
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1) * T * T
    assert torch.allclose(teacher_student_loss(s, t, y, a, T), a * ce + (1 - a) * kl, atol=1e-5)


def test_student_total_is_the_weighted_sum_with_ce_in_both_terms():
    s, t, f = _logits(6, 5, 2), _logits(6, 5, 3), _logits(6, 5, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    a, T, lam, eta = 0.1, 4.0, 1.0, 3.0
    ce = torch.nn.functional.cross_entropy(s, y, reduction="none")
    expected = (lam + eta) * a * ce + lam * (1 - a) * kd_kl(s, t, T) + eta * (1 - a) * kd_kl(s, f, T)
    assert torch.allclose(slkd_student_loss(s, t, f, y, a, T, lam, eta), expected, atol=1e-5)


def test_student_gradient_matches_a_hand_computation():
    # 1 row, 2 classes, T = 1: d/ds of KL(p_g || p_s) = p_s - p_g, of CE = p_s - onehot.
    s = torch.tensor([[0.5, -0.5]], requires_grad=True)
    t, f = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    a, lam, eta = 0.25, 2.0, 3.0
    slkd_student_loss(s, t, f, y, a, 1.0, lam, eta).sum().backward()
    p_s, p_t, p_f = torch.softmax(s.detach(), 1), torch.softmax(t, 1), torch.softmax(f, 1)
    onehot = torch.tensor([[1.0, 0.0]])
    expected = (lam + eta) * a * (p_s - onehot) + lam * (1 - a) * (p_s - p_t) + eta * (1 - a) * (p_s - p_f)
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_no_gradient_into_the_guides():
    s = _logits(3, 4, 5).requires_grad_()
    t, f = _logits(3, 4, 6).requires_grad_(), _logits(3, 4, 7).requires_grad_()
    slkd_student_loss(s, t, f, torch.tensor([0, 1, 2]), 0.1, 4.0).sum().backward()
    assert s.grad is not None and t.grad is None and f.grad is None


def test_fusion_weights():
    assert fusion_weights(None, 2) == (0.5, 0.5)
    assert fusion_weights(None, 1) == (1.0,)
    assert fusion_weights(0.7, 2) == pytest.approx((0.7, 0.3))
    assert fusion_weights(1.0, 1) == (1.0,)
    assert fusion_weights([0.2, 0.3, 0.5], 3) == (0.2, 0.3, 0.5)
    assert fusion_weights(None, 4) == (0.25,) * 4
    for bad, k, msg in (
        (1.5, 2, "in \\[0, 1\\]"), (0.5, 3, "list of 3"), ([0.5, 0.5], 3, "2 weights but there are 3"),
        ([0.5, 0.6], 2, "sum to 1"), ([1.2, -0.2], 2, "in \\[0, 1\\]"), (0.5, 1, "list of 1"),
    ):
        with pytest.raises(ValueError, match=msg):
            fusion_weights(bad, k)


def test_logit_fusion_is_eq6():
    z1, z2 = _logits(4, 3, 8), _logits(4, 3, 9)
    assert torch.allclose(fuse_outputs([z1, z2], (0.3, 0.7), "logits"), 0.3 * z1 + 0.7 * z2)


def test_prob_fusion_softmax_at_tau_is_the_mixture():
    z1, z2, z3 = _logits(4, 6, 10, 3.0), _logits(4, 6, 11, 3.0), _logits(4, 6, 12, 3.0)
    w, T = (0.2, 0.5, 0.3), 4.0
    fused = fuse_outputs([z1, z2, z3], w, "probs", T)
    mix = sum(wi * torch.softmax(z / T, 1) for wi, z in zip(w, (z1, z2, z3)))
    assert torch.allclose(torch.softmax(fused / T, 1), mix, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.sampled_from(["logits", "probs"]), st.floats(0.5, 8.0),
       st.floats(-50.0, 50.0, allow_nan=False))
def test_rho_one_reduces_to_the_first_teacher(n, c, fusion, T, scale):
    z1, z2 = _logits(n, c, n + c, scale), _logits(n, c, n * c + 1, scale)
    fused = fuse_outputs([z1, z2], fusion_weights(1.0, 2), fusion, T)
    assert torch.isfinite(fused).all()
    # the distribution the student sees at T is the first SL-teacher's
    assert torch.allclose(torch.softmax(fused / T, 1), torch.softmax(z1 / T, 1), atol=1e-5)
    y = torch.zeros(n, dtype=torch.long)
    s = _logits(n, c, 99)
    assert torch.allclose(teacher_student_loss(s, fused, y, 0.1, T), teacher_student_loss(s, z1, y, 0.1, T), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.integers(1, 4), st.sampled_from(["logits", "probs"]),
       st.floats(-1e3, 1e3, allow_nan=False))
def test_fusion_of_identical_teachers_is_that_teacher_and_finite(n, c, k, fusion, scale):
    z = _logits(n, c, n + 7 * c, scale)
    w = fusion_weights(None, k)
    fused = fuse_outputs([z] * k, w, fusion, 4.0)
    assert fused.shape == (n, c) and torch.isfinite(fused).all()
    assert torch.allclose(torch.softmax(fused / 4.0, 1), torch.softmax(z / 4.0, 1), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(2, 6), st.floats(0.0, 1.0), st.floats(0.5, 8.0))
def test_teacher_student_loss_nonnegative_and_zero_kd_on_equal_logits(n, c, alpha, T):
    s = _logits(n, c, n + 3 * c)
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(n))
    out = teacher_student_loss(s, s, y, alpha, T)
    ce = torch.nn.functional.cross_entropy(s, y, reduction="none")
    assert out.shape == (n,) and (out >= -1e-5).all()
    assert torch.allclose(out, alpha * ce, atol=1e-4)
