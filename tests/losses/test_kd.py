"""Hinton KD per sample."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses import cross_entropy, kd_kl


def test_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    T = 3.0
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    expected = (pt * (pt.log() - ps.log())).sum(1) * T * T
    assert torch.allclose(kd_kl(s, t, T), expected, atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.floats(-1e4, 1e4, allow_nan=False, width=32))
def test_nonnegative_finite_and_zero_on_equal_inputs(n, c, scale):
    g = torch.Generator().manual_seed(n + 10 * c)
    s = torch.randn(n, c, generator=g) * scale
    t = torch.randn(n, c, generator=g) * scale
    out = kd_kl(s, t, 4.0)
    assert out.shape == (n,)
    assert torch.isfinite(out).all() and (out >= -1e-4).all()
    assert torch.allclose(kd_kl(s, s, 4.0), torch.zeros(n), atol=1e-4)


def test_per_sample_temperatures():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    temps = torch.tensor([1.0, 2.0, 4.0])
    per = kd_kl(s, t, temps)
    for i, T in enumerate(temps.tolist()):
        assert per[i].item() == pytest.approx(kd_kl(s[i : i + 1], t[i : i + 1], T).item(), rel=1e-5)


def test_no_gradient_into_teacher():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    kd_kl(s, t).sum().backward()
    assert t.grad is None and s.grad is not None


def test_cross_entropy_per_sample():
    s, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    assert cross_entropy(s, y).shape == (5,)
    assert cross_entropy(s, y).mean().item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item(), rel=1e-6)
