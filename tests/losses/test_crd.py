"""CRD pieces (Tian et al. 2020): critic scores, NCE loss (eq. 18), memory update, negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.crd import contrast_scores, momentum_update, nce_loss, sample_negatives


def test_scores_and_nce_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    n, k, d, M, tau = 3, 5, 8, 50, 0.07
    v = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    rows = F.normalize(torch.randn(n, 1 + k, d, generator=g, dtype=torch.float64), dim=2)
    scores = contrast_scores(v, rows, tau)
    Z = 1000.0
    got = nce_loss(scores / Z, 1.0 / M)
    for i in range(n):
        h = [math.exp(sum(a * b for a, b in zip(v[i].tolist(), rows[i, j].tolist())) / tau) / Z for j in range(1 + k)]
        assert scores[i].tolist() == pytest.approx([x * Z for x in h], rel=1e-4)
        kpn = k / M
        expected = -math.log(h[0] / (h[0] + kpn + 1e-7)) - sum(math.log(kpn / (x + kpn + 1e-7)) for x in h[1:])
        assert got[i].item() == pytest.approx(expected, rel=1e-4)


def test_nce_prefers_a_strong_positive():
    weak = torch.tensor([[0.01, 1.0, 1.0]])
    strong = torch.tensor([[100.0, 0.01, 0.01]])
    assert nce_loss(strong, 0.01) < nce_loss(weak, 0.01)


def test_momentum_update_touches_only_batch_rows_and_keeps_unit_norm():
    memory = F.normalize(torch.randn(10, 4), dim=1)
    before = memory.clone()
    idx = torch.tensor([2, 7])
    v = F.normalize(torch.randn(2, 4), dim=1)
    momentum_update(memory, idx, v, 0.5)
    others = [i for i in range(10) if i not in (2, 7)]
    assert torch.equal(memory[others], before[others])
    expected = F.normalize(0.5 * before[idx] + 0.5 * v, dim=1)
    assert torch.allclose(memory[idx], expected, atol=1e-6)
    assert torch.allclose(memory[idx].norm(dim=1), torch.ones(2), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 8), st.integers(1, 64))
def test_negatives_are_in_range_never_the_positive_and_on_the_same_device(M, n, k):
    idx = torch.randint(0, M, (n,))
    out = sample_negatives(idx, M, k)
    assert out.shape == (n, 1 + k) and out.device == idx.device and out.dtype == torch.int64
    assert torch.equal(out[:, 0], idx)
    neg = out[:, 1:]
    assert (neg >= 0).all() and (neg < M).all()
    assert (neg != idx[:, None]).all()


def test_negatives_are_uniform_over_the_other_samples():
    torch.manual_seed(0)
    M = 7
    out = sample_negatives(torch.tensor([3]), M, 60_000)[0, 1:]
    counts = torch.bincount(out, minlength=M).float()
    assert counts[3] == 0
    others = counts[[0, 1, 2, 4, 5, 6]] / 60_000
    assert torch.allclose(others, torch.full((6,), 1 / 6), atol=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_negatives_are_drawn_on_cuda():
    idx = torch.arange(8, device="cuda")
    assert sample_negatives(idx, 100, 16).device.type == "cuda"
