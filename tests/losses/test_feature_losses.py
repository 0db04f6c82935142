"""Feature-method losses against straightforward loop implementations of the papers' formulas.

Each loss is recomputed here with Python loops over samples, channels and positions on small
random tensors (no vectorised shortcut shared with the library), checked to be zero where the
paper's distance is zero, and to stay finite (values and gradients) on ``±1e4`` features and a
batch of one.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.at import at_loss
from beyondkd.losses.fitnet import hint_loss
from beyondkd.losses.indistill import l1_kept_channels, pruned_feature_mse
from beyondkd.losses.ofd import margin_from_bn, margin_relu, ofd_loss, partial_l2
from beyondkd.losses.reviewkd import hcl_loss
from beyondkd.losses.rkd import rkd_angle_loss, rkd_distance_loss, rkd_loss
from beyondkd.losses.sp import sp_loss


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# --- FitNet ------------------------------------------------------------------------------------
def test_fitnet_matches_loops():
    g = _gen(0)
    s, t = torch.randn(3, 2, 4, 5, generator=g), torch.randn(3, 2, 4, 5, generator=g)
    expected = []
    for n in range(3):
        acc = 0.0
        for c in range(2):
            for h in range(4):
                for w in range(5):
                    acc += (s[n, c, h, w].item() - t[n, c, h, w].item()) ** 2
        expected.append(acc / (2 * 4 * 5))
    assert torch.allclose(hint_loss(s, t), torch.tensor(expected), rtol=1e-5)
    assert torch.equal(hint_loss(s, s), torch.zeros(3))


# --- AT ------------------------------------------------------------------------------------------
def _attention_loops(a: torch.Tensor, n: int, p: float) -> list[float]:
    c, h, w = a.shape[1:]
    q = [sum(abs(a[n, k, i, j].item()) ** p for k in range(c)) / c for i in range(h) for j in range(w)]
    norm = math.sqrt(sum(v * v for v in q))
    return [v / norm for v in q]


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_at_matches_loops(p):
    g = _gen(1)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    expected = []
    for n in range(2):
        qs, qt = _attention_loops(s, n, p), _attention_loops(t, n, p)
        expected.append(sum((a - b) ** 2 for a, b in zip(qs, qt)) / len(qs))
    assert torch.allclose(at_loss(s, t, p), torch.tensor(expected), rtol=1e-4, atol=1e-7)


def test_at_is_zero_for_equal_maps_and_channel_free():
    g = _gen(2)
    s = torch.randn(3, 4, 5, 5, generator=g)
    assert torch.allclose(at_loss(s, s), torch.zeros(3), atol=1e-7)
    # same attention map from a different channel count (every channel duplicated) -> zero
    assert torch.allclose(at_loss(s, torch.cat([s, s], 1)), torch.zeros(3), atol=1e-7)


# --- SP ------------------------------------------------------------------------------------------
def _sp_matrix_loops(x: torch.Tensor) -> list[list[float]]:
    q = x.flatten(1).tolist()
    b = len(q)
    g = [[sum(a * c for a, c in zip(q[i], q[j])) for j in range(b)] for i in range(b)]
    out = []
    for i in range(b):
        norm = math.sqrt(sum(v * v for v in g[i]))
        out.append([v / norm for v in g[i]])
    return out


def test_sp_matches_eq3():
    g = _gen(3)
    s, t = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 6, 2, 2, generator=g)
    gs, gt = _sp_matrix_loops(s), _sp_matrix_loops(t)
    b = 4
    rows = [sum((gt[i][j] - gs[i][j]) ** 2 for j in range(b)) / b for i in range(b)]
    frob = sum(sum((gt[i][j] - gs[i][j]) ** 2 for j in range(b)) for i in range(b)) / b**2
    out = sp_loss(s, t)
    assert torch.allclose(out, torch.tensor(rows), rtol=1e-4, atol=1e-7)
    assert out.mean().item() == pytest.approx(frob, rel=1e-4)
    assert torch.allclose(sp_loss(s, s), torch.zeros(4), atol=1e-7)


# --- RKD -----------------------------------------------------------------------------------------
def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _psi_d(x: list[list[float]]) -> list[list[float]]:
    n = len(x)
    d = [[_dist(x[i], x[j]) for j in range(n)] for i in range(n)]
    mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return [[v / mu for v in row] for row in d]


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v] if norm > 0 else [0.0 for _ in v]


def _psi_a(x: list[list[float]]) -> list[list[list[float]]]:
    n = len(x)
    out = []
    for j in range(n):  # vertex
        e = [_unit([a - b for a, b in zip(x[i], x[j])]) for i in range(n)]
        out.append([[sum(a * b for a, b in zip(e[i], e[k])) for k in range(n)] for i in range(n)])
    return out


def test_rkd_matches_eq4_to_7():
    g = _gen(4)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 7, generator=g)
    ds, dt = _psi_d(s.tolist()), _psi_d(t.tolist())
    rows_d = [sum(_huber(ds[i][j] - dt[i][j]) for j in range(5)) / 5 for i in range(5)]
    as_, at_ = _psi_a(s.tolist()), _psi_a(t.tolist())
    rows_a = [sum(_huber(as_[j][i][k] - at_[j][i][k]) for i in range(5) for k in range(5)) / 25 for j in range(5)]
    assert torch.allclose(rkd_distance_loss(s, t), torch.tensor(rows_d), rtol=1e-4, atol=1e-6)
    assert torch.allclose(rkd_angle_loss(s, t), torch.tensor(rows_a), rtol=1e-4, atol=1e-6)
    combined = 25 * torch.tensor(rows_d) + 50 * torch.tensor(rows_a)
    assert torch.allclose(rkd_loss(s, t), combined, rtol=1e-4, atol=1e-6)


def test_rkd_is_zero_for_equal_relations():
    g = _gen(5)
    s = torch.randn(6, 4, generator=g)
    assert torch.allclose(rkd_loss(s, s), torch.zeros(6), atol=1e-6)
    # distances and angles are scale- and rotation-free: a scaled, rotated copy has zero loss
    rot, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    assert torch.allclose(rkd_loss(s, 3.0 * s @ rot), torch.zeros(6), atol=1e-5)


# --- OFD -----------------------------------------------------------------------------------------
def _phi_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_margin_is_the_truncated_gaussian_mean():
    weight = torch.tensor([1.0, 0.5, -2.0, 1.0])
    bias = torch.tensor([0.0, 1.0, -0.5, 10.0])
    m = margin_from_bn(weight, bias)
    for c in range(3):
        s, mu = abs(weight[c].item()), bias[c].item()
        z = mu / s
        expected = mu - s * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / _phi_cdf(-z)
        assert m[c].item() == pytest.approx(expected, rel=1e-5)
        # and against sampling: E[x | x < 0] for x ~ N(mu, s^2)
        x = torch.randn(400_000, generator=_gen(c)) * s + mu
        assert m[c].item() == pytest.approx(x[x < 0].mean().item(), abs=0.02)
    assert m[3].item() == pytest.approx(-3.0)  # P(x < 0) ~ 0: the authors' fallback -3|gamma|
    assert (m < 0).all()


def test_partial_l2_matches_eq4():
    g = _gen(6)
    s, t = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    expected = []
    for n in range(2):
        acc = 0.0
        for c in range(3):
            for h in range(2):
                for w in range(2):
                    si, ti = s[n, c, h, w].item(), t[n, c, h, w].item()
                    acc += 0.0 if (si <= ti and ti <= 0) else (ti - si) ** 2
        expected.append(acc)
    assert torch.allclose(partial_l2(s, t), torch.tensor(expected), rtol=1e-5)


def test_ofd_uses_the_margin_relu_teacher():
    g = _gen(7)
    t = torch.randn(3, 4, 3, 3, generator=g)
    margin = torch.tensor([-0.5, -0.2, -1.0, -0.1])
    target = margin_relu(t, margin)
    assert torch.allclose(ofd_loss(target, t, margin), torch.zeros(3))
    # a student below the (negative) target is not penalised
    assert torch.allclose(ofd_loss(target - 5.0 * (target <= 0), t, margin), torch.zeros(3))
    for c in range(4):
        assert torch.equal(target[:, c], torch.clamp(t[:, c], min=margin[c].item()))


# --- ReviewKD HCL --------------------------------------------------------------------------------
def _pool_loops(x: torch.Tensor, n: int, c: int, size: int) -> list[list[float]]:
    h = x.shape[2]
    k = h // size
    return [[sum(x[n, c, i * k + a, j * k + b].item() for a in range(k) for b in range(k)) / (k * k)
             for j in range(size)] for i in range(size)]


def test_hcl_matches_the_pyramid():
    g = _gen(8)
    s, t = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)
    expected = []
    for n in range(2):
        total, weights, w = 0.0, 0.0, 1.0
        for level, size in enumerate([8, 4, 2, 1]):
            ps = [_pool_loops(s, n, c, size) for c in range(2)]
            pt = [_pool_loops(t, n, c, size) for c in range(2)]
            mse = sum((ps[c][i][j] - pt[c][i][j]) ** 2 for c in range(2) for i in range(size) for j in range(size)) / (2 * size * size)
            total += w * mse
            weights += w
            w /= 2
        expected.append(total / weights)
    assert torch.allclose(hcl_loss(s, t), torch.tensor(expected), rtol=1e-4)
    assert torch.equal(hcl_loss(s, s), torch.zeros(2))


def test_hcl_skips_levels_not_smaller_than_the_map():
    g = _gen(9)
    s, t = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    full = (s - t).pow(2).flatten(1).mean(1)
    one = (s.mean((2, 3)) - t.mean((2, 3))).pow(2).mean(1)
    assert torch.allclose(hcl_loss(s, t), (full + 0.5 * one) / 1.5, rtol=1e-5)  # only level 1 < 2


# --- InDistill -----------------------------------------------------------------------------------
def test_l1_pruning_keeps_the_largest_filters():
    g = _gen(10)
    w = torch.randn(6, 2, 3, 3, generator=g)
    norms = [sum(abs(v) for v in w[i].flatten().tolist()) for i in range(6)]
    best = sorted(sorted(range(6), key=lambda i: -norms[i])[:4])
    assert l1_kept_channels(w, 4).tolist() == best
    assert l1_kept_channels(w, 6).tolist() == list(range(6))
    with pytest.raises(ValueError):
        l1_kept_channels(w, 7)


def test_pruned_mse_matches_loops_and_is_zero_on_kept_channels():
    g = _gen(11)
    t = torch.randn(2, 5, 3, 3, generator=g)
    kept = torch.tensor([0, 3, 4])
    s = torch.randn(2, 3, 3, 3, generator=g)
    expected = []
    for n in range(2):
        acc = sum((s[n, i, h, w].item() - t[n, kept[i].item(), h, w].item()) ** 2
                  for i in range(3) for h in range(3) for w in range(3))
        expected.append(acc / 27)
    assert torch.allclose(pruned_feature_mse(s, t, kept), torch.tensor(expected), rtol=1e-5)
    assert torch.equal(pruned_feature_mse(t[:, kept], t, kept), torch.zeros(2))


# --- every loss: finite values and gradients on huge features and batch 1 -----------------------
def _all_losses(s4, t4, s2, t2):
    kept = torch.arange(s4.shape[1])
    margin = torch.full((t4.shape[1],), -0.5)
    return {
        "fitnet": hint_loss(s4, t4),
        "at": at_loss(s4, t4),
        "sp": sp_loss(s4, t4),
        "rkd": rkd_loss(s2, t2),
        "ofd": ofd_loss(s4, t4, margin),
        "hcl": hcl_loss(s4, t4),
        "indistill": pruned_feature_mse(s4, t4, kept),
    }


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.floats(-1e4, 1e4, allow_nan=False, width=32), st.booleans(), st.integers(0, 99))
def test_finite_values_and_gradients(n, scale, constant, seed):
    g = _gen(seed)
    s4 = (torch.randn(n, 3, 4, 4, generator=g) * scale)
    t4 = torch.randn(n, 3, 4, 4, generator=g) * scale
    s2, t2 = torch.randn(n, 5, generator=g) * scale, torch.randn(n, 5, generator=g) * scale
    if constant:  # dead maps / identical embeddings: zero norms and zero distances
        s4, s2 = torch.full_like(s4, scale), torch.full_like(s2, scale)
    s4.requires_grad_(True)
    s2.requires_grad_(True)
    for name, out in _all_losses(s4, t4, s2, t2).items():
        assert out.shape == (n,), name
        assert torch.isfinite(out).all(), name
        (g4, g2) = torch.autograd.grad(out.sum(), (s4, s2), allow_unused=True)
        for grad in (g4, g2):
            assert grad is None or torch.isfinite(grad).all(), name
