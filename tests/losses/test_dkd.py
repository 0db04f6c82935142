"""DKD per sample (Zhao et al. 2022, eq. 1-7) against a direct computation from the paper."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.dkd import dkd_loss, dkd_parts
from beyondkd.losses.kd import kd_kl


def _reference(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float) -> list[float]:
    """Loop over samples; explicit softmax; binary and non-target distributions as in eq. 2-5."""
    out = []
    for i in range(s.shape[0]):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        a = int(y[i])
        b_s, b_t = (ps[a], 1 - ps[a]), (pt[a], 1 - pt[a])
        tckd = sum(bt * math.log(bt / bs) for bt, bs in zip(b_t, b_s))
        others = [c for c in range(len(ps)) if c != a]
        hs = [ps[c] / (1 - ps[a]) for c in others]
        ht = [pt[c] / (1 - pt[a]) for c in others]
        nckd = sum(q * math.log(q / r) for q, r in zip(ht, hs))
        out.append(T * T * (alpha * tckd + beta * nckd))
    return out


def test_matches_the_paper_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2, torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (6,), generator=g)
    got = dkd_loss(s, t, y, alpha=1.5, beta=8.0, temperature=3.0)
    assert got.shape == (6,)
    assert got.tolist() == pytest.approx(_reference(s, t, y, 1.5, 8.0, 3.0), rel=1e-4, abs=1e-5)


def test_kd_decomposes_into_tckd_and_weighted_nckd():
    """DKD eq. 6: KD = TCKD + (1 - p_y^t) NCKD (all at T, times T²)."""
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 7, generator=g), torch.randn(8, 7, generator=g)
    y = torch.randint(0, 7, (8,), generator=g)
    T = 4.0
    tckd, nckd = dkd_parts(s, t, y, T)
    p_t = torch.softmax(t / T, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(tckd + (1 - p_t) * nckd, kd_kl(s, t, T), atol=1e-4)


def test_per_sample_temperatures_match_scalar_calls():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    y = torch.tensor([0, 3, 1])
    temps = torch.tensor([1.0, 2.5, 6.0])
    per = dkd_loss(s, t, y, 1.0, 8.0, temps)
    for i, T in enumerate(temps.tolist()):
        assert per[i].item() == pytest.approx(dkd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], 1.0, 8.0, T).item(), rel=1e-5)


def test_two_classes_nckd_is_zero_and_tckd_is_kd():
    s, t = torch.tensor([[3.0, -2.0], [0.0, 1e4]]), torch.tensor([[-1.0, 2.0], [1e4, -1e4]])
    y = torch.tensor([0, 1])
    tckd, nckd = dkd_parts(s, t, y, 4.0)
    assert torch.equal(nckd, torch.zeros(2))
    assert torch.allclose(tckd, kd_kl(s, t, 4.0), rtol=1e-5)


def test_gradient_reaches_student_never_teacher():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    temp = torch.tensor(3.0, requires_grad=True)
    dkd_loss(s, t, torch.tensor([0, 1, 2, 3]), temperature=temp).sum().backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()
    assert temp.grad is not None and torch.isfinite(temp.grad)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.sampled_from([1e-3, 1.0, 30.0, 1e4]), st.floats(0.5, 8.0), st.integers(0, 10_000))
def test_finite_nonnegative_and_zero_on_equal_logits(n, c, scale, T, seed):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g) * scale).requires_grad_(True)
    t = torch.randn(n, c, generator=g) * scale
    y = torch.randint(0, c, (n,), generator=g)
    tckd, nckd = dkd_parts(s, t, y, T)
    loss = dkd_loss(s, t, y, 1.0, 8.0, T)
    assert loss.shape == (n,)
    assert torch.isfinite(loss).all() and (tckd >= -1e-3).all() and (nckd >= -1e-3).all()
    loss.sum().backward()
    assert torch.isfinite(s.grad).all()
    same = dkd_loss(t, t, y, 1.0, 8.0, T)
    assert torch.allclose(same, torch.zeros(n), atol=1e-3)


def test_huge_opposite_logits_and_a_batch_of_one():
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0]])
    for y in range(3):
        out = dkd_loss(s, t, torch.tensor([y]))
        out.sum().backward()
        assert out.shape == (1,) and torch.isfinite(out).all() and torch.isfinite(s.grad).all()
