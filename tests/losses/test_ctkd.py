"""CTKD pieces: gradient reversal, the cosine λ curriculum (eq. 8), the bounded temperature."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.ctkd import bounded_temperature, cosine_lambda, grad_reverse, temperature_to_theta


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.0])
def test_grl_is_identity_forward_and_reverses_gradient_by_lambda(lam):
    x = torch.randn(5, requires_grad=True)
    w = torch.randn(5)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lam * w)


def test_cosine_lambda_follows_eq8():
    lo, hi, E = 0.1, 0.9, 10
    for n in range(0, 15):
        expected = lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (1 + min(n, E) / E)))
        assert cosine_lambda(n, E, lo, hi) == pytest.approx(expected)
    assert cosine_lambda(0, E, lo, hi) == pytest.approx(lo)
    assert cosine_lambda(E, E, lo, hi) == pytest.approx(hi) == cosine_lambda(100, E, lo, hi)
    values = [cosine_lambda(n / 4, E, lo, hi) for n in range(60)]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    assert cosine_lambda(0, 0, lo, hi) == hi


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e30, 1e30, allow_nan=False), st.floats(0.01, 5.0), st.floats(0.01, 50.0))
def test_temperature_stays_in_range(theta, t_min, width):
    t = bounded_temperature(torch.tensor([theta, float("inf"), float("-inf")]), t_min, t_min + width)
    assert torch.isfinite(t).all()
    assert (t >= t_min).all() and (t <= t_min + width).all()


def test_theta_inverts_the_range_map():
    for T in (1.5, 4.0, 20.0):
        theta = temperature_to_theta(T, 1.0, 21.0)
        assert bounded_temperature(torch.tensor(theta), 1.0, 21.0).item() == pytest.approx(T, rel=1e-5)
    with pytest.raises(ValueError):
        temperature_to_theta(21.0, 1.0, 21.0)
