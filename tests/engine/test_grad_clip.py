"""Gradient clipping is per optimizer: one group's large gradient never shrinks another's."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from beyondkd.engine.optim import clip_gradients_per_optimizer


def _param_with_grad(grad: list[float]) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(len(grad)))
    p.grad = torch.tensor(grad)
    return p


@settings(max_examples=40, deadline=None)
@given(
    small=st.lists(st.floats(-3, 3), min_size=1, max_size=6),
    big=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=6),
    max_norm=st.floats(0.1, 10.0),
)
def test_each_optimizer_is_clipped_on_its_own(small: list[float], big: list[float], max_norm: float) -> None:
    a, b = _param_with_grad(small), _param_with_grad(big)
    before_a, before_b = a.grad.clone(), b.grad.clone()
    opts = [torch.optim.SGD([a], lr=0.1), torch.optim.SGD([b], lr=0.1)]
    norms = clip_gradients_per_optimizer(opts, max_norm)
    for p, before, norm in ((a, before_a, norms[0]), (b, before_b, norms[1])):
        assert torch.isclose(norm, before.norm(), rtol=1e-5, atol=1e-6)
        expected = before * min(1.0, max_norm / (float(before.norm()) + 1e-6))
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-5)
        assert float(p.grad.norm()) <= max_norm * (1 + 1e-4)


def test_one_optimizer_equals_clip_grad_norm_of_all_its_parameters() -> None:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(5)) for _ in range(3)]
    grads = [torch.randn(5) * 10 for _ in params]
    ref = [g.clone() for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    clip_gradients_per_optimizer([torch.optim.SGD(params, lr=1.0)], 1.0)
    ref_params = [nn.Parameter(torch.zeros(5)) for _ in range(3)]
    for p, g in zip(ref_params, ref):
        p.grad = g
    torch.nn.utils.clip_grad_norm_(ref_params, 1.0)
    for p, r in zip(params, ref_params):
        torch.testing.assert_close(p.grad, r.grad)


def test_parameters_without_gradient_are_skipped() -> None:
    a = _param_with_grad([3.0, 4.0])
    frozen = nn.Parameter(torch.zeros(2))  # no grad this step (e.g. an idle phase)
    (norm,) = clip_gradients_per_optimizer([torch.optim.SGD([a, frozen], lr=1.0)], 1.0)
    assert float(norm) == 5.0 and frozen.grad is None
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8]), rtol=1e-4, atol=1e-5)
