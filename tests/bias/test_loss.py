"""The bias-aware loss (BTKD eq. 8–9): limits, ablation switches, reductions, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.bias import BIAS_PRESETS, BiasAwareKD, BiasPlugin, Progress, bias_config, rectify
from beyondkd.errors import ConfigError


def _kl_rows(s: torch.Tensor, t_probs: torch.Tensor, T: float) -> torch.Tensor:
    """T² · Σ p_t (log p_t − log p_s) per row, written out directly."""
    log_ps = torch.log_softmax(s / T, 1)
    terms = torch.where(t_probs > 0, t_probs * (t_probs.clamp_min(1e-30).log() - log_ps), torch.zeros_like(t_probs))
    return terms.sum(1) * T * T


def _batch(n=32, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g)
    t = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def test_paper_loss_matches_a_direct_computation_of_eq_9():
    s, t, y = _batch()
    T, gamma = 4.0, 0.3
    crit = BiasAwareKD.from_preset("paper", temperature=T)
    loss, parts = crit(s, t, y, progress=gamma)
    p_t = torch.softmax(t / T, 1)
    right = p_t.argmax(1) == y
    p_rect = rectify(p_t, y, "paper")
    kl = _kl_rows(s, p_rect, T)
    easy = kl[right].sum() / len(y)
    hard = kl[~right].sum() / len(y)
    ce = F.cross_entropy(s, y)
    expected = (1 - gamma) * (ce + easy) + gamma * hard
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["gamma"].item() == pytest.approx(gamma)
    assert parts["rows_right"].item() == right.sum().item()
    assert parts["rows_rectified"].item() == (~right).sum().item()


def test_gamma_limits():
    s, t, y = _batch(seed=1)
    crit = BiasAwareKD.from_preset("paper")
    loss0, p0 = crit(s, t, y, progress=0.0)
    loss1, p1 = crit(s, t, y, progress=1.0)
    assert p0["kd_hard"].item() == 0.0 and p0["kd_easy"].item() > 0
    assert p1["kd_easy"].item() == 0.0 and p1["ce"].item() == 0.0
    assert loss1.item() == pytest.approx(p1["kd_hard"].item())
    assert loss0.item() == pytest.approx((p0["ce"] + p0["kd_easy"]).item())


def test_official_code_keeps_ce_outside_gamma_and_uses_subbatch_means():
    s, t, y = _batch(seed=2)
    T = 4.0
    crit = BiasAwareKD.from_preset("official-code", temperature=T)
    prog = Progress(step=0, total_steps=100, epoch=3, total_epochs=10)
    loss, parts = crit(s, t, y, progress=prog)
    import math

    gamma = math.sin(math.pi * 3 / 20) ** 2
    assert parts["gamma"].item() == pytest.approx(gamma, rel=1e-6)
    p_t = torch.softmax(t / T, 1)
    right = p_t.argmax(1) == y
    # swap rectification = swapping the two logits
    t_sw = t.clone()
    b = t.argmax(1)
    idx = torch.arange(len(y))
    t_sw[idx, y], t_sw[idx, b] = t[idx, b], t[idx, y]
    kl = _kl_rows(s, torch.softmax(torch.where(right[:, None], t, t_sw) / T, 1), T)
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * ((1 - gamma) * kl[right].mean() + gamma * kl[~right].mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("reduction", ["batch", "subbatch"])
@pytest.mark.parametrize("all_right", [True, False])
def test_empty_sets_never_make_nan(reduction, all_right):
    s = torch.randn(8, 4, requires_grad=True)
    y = torch.randint(0, 4, (8,))
    t = F.one_hot(y if all_right else (y + 1) % 4, 4).float() * 10
    crit = BiasAwareKD(config=bias_config("paper", reduction=reduction))
    loss, parts = crit(s, t, y, progress=0.5)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    empty = "kd_hard" if all_right else "kd_easy"
    assert parts[empty].item() == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(2, 6),
    st.floats(-1e4, 1e4, allow_nan=False, width=32),
    st.sampled_from(list(BIAS_PRESETS)),
    st.floats(0, 1),
)
def test_finite_for_huge_logits_every_preset(n, c, scale, preset, progress):
    g = torch.Generator().manual_seed(n * 31 + c)
    s = (torch.randn(n, c, generator=g) * scale).requires_grad_()
    t = torch.randn(n, c, generator=g) * scale
    y = torch.randint(0, c, (n,), generator=g)
    crit = BiasAwareKD.from_preset(preset)
    loss, parts = crit(s, t, y, progress=Progress.from_fraction(progress, total_epochs=3))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert all(torch.isfinite(v).all() for v in parts.values())


def test_gradient_reaches_only_the_student():
    s = torch.randn(16, 5, requires_grad=True)
    t = torch.randn(16, 5, requires_grad=True)
    y = torch.randint(0, 5, (16,))
    loss, _ = BiasAwareKD.from_preset("paper")(s, t, y, progress=0.5)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_ablation_switches():
    s, t, y = _batch(seed=3)
    T = 4.0
    p_t = torch.softmax(t / T, 1)
    right = p_t.argmax(1) == y
    ce = F.cross_entropy(s, y)
    kl_raw = _kl_rows(s, p_t, T)
    kl_rect = _kl_rows(s, rectify(p_t, y, "paper"), T)
    n = len(y)
    cases = {
        "eliminate-only": ce + kl_raw[right].sum() / n,
        "rectify-only": ce + kl_rect.mean(),
        "constant": ce + kl_rect.mean(),
    }
    for preset, expected in cases.items():
        loss, _ = BiasAwareKD.from_preset(preset)(s, t, y)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), preset
    off = BiasPlugin(eliminate=False, rectify=False, schedule="none")
    crit = BiasAwareKD(config=off.config)
    loss, _ = crit(s, t, y)
    assert loss.item() == pytest.approx((ce + kl_raw.mean()).item(), rel=1e-5)


def test_right_teacher_everywhere_reduces_to_kd():
    s = torch.randn(10, 3)
    y = torch.randint(0, 3, (10,))
    t = F.one_hot(y, 3).float() * 5 + torch.randn(10, 3) * 0.1
    for preset in ("paper", "constant", "strict"):
        loss, parts = BiasAwareKD.from_preset(preset)(s, t, y, progress=0.0)
        kd = _kl_rows(s, torch.softmax(t / 4, 1), 4).mean()
        assert loss.item() == pytest.approx((F.cross_entropy(s, y) + kd).item(), rel=1e-5)
        assert parts["rows_rectified"].item() == 0


def test_student_equal_to_rectified_teacher_has_zero_kd():
    t = torch.randn(12, 4) * 2
    y = torch.randint(0, 4, (12,))
    crit = BiasAwareKD.from_preset("constant", temperature=1.0)
    targets = crit.plugin.teacher_targets(t, y, 1.0)
    _, parts = crit(targets.teacher_logits.clone(), t, y)
    assert parts["kd_easy"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["kd_hard"].item() == pytest.approx(0.0, abs=1e-6)


def test_progress_required_for_dynamic_schedule():
    s, t, y = _batch()
    with pytest.raises(ValueError, match="progress is required"):
        BiasAwareKD.from_preset("paper")(s, t, y)


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="same number of classes"):
        BiasAwareKD()(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]))


def test_bad_preset_and_config_errors():
    with pytest.raises(ConfigError, match="unknown bias preset 'papr'.*did you mean 'paper'"):
        bias_config("papr")
    with pytest.raises(ConfigError, match="space: logits"):
        BiasPlugin(space="logits", variant="strict")
    with pytest.raises(ConfigError, match="temperature"):
        BiasAwareKD(temperature=0)


def test_rectified_rows_top_is_label_statistic():
    t = torch.tensor([[0.0, 5.0, 4.9, 4.9]])  # paper rectification leaves class 2 on top
    y = torch.tensor([0])
    _, parts = BiasAwareKD.from_preset("constant", temperature=1.0)(torch.zeros(1, 4), t, y)
    assert parts["rows_rectified"].item() == 1
    assert parts["rows_rectified_top_is_label"].item() == 0
    _, parts = BiasAwareKD.from_preset("strict", temperature=1.0)(torch.zeros(1, 4), t, y)
    assert parts["rows_rectified_top_is_label"].item() == 1


# -- research options: rectification temperature and per-row weights ---------------------------
def test_rectify_temperature_one_rectifies_the_prediction_then_the_method_softens_it():
    from beyondkd.bias import teacher_right_mask

    s, t, y = _batch(seed=7)
    T = 4.0
    crit = BiasAwareKD(T, 1.0, 1.0, config=bias_config("constant", rectify_temperature=1.0))
    targets = crit.plugin.teacher_targets(t, y, T)
    right = teacher_right_mask(t, y)
    assert torch.allclose(torch.softmax(targets.teacher_logits, 1), rectify(torch.softmax(t, 1), y, "paper", right=right), atol=1e-6)
    loss, _ = crit(s, t, y)
    expected = F.cross_entropy(s, y) + _kl_rows(s, torch.softmax(targets.teacher_logits / T, 1), T).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    default = BiasAwareKD(T, 1.0, 1.0, config=bias_config("constant"))
    assert not torch.allclose(default.plugin.teacher_targets(t, y, T).teacher_logits, targets.teacher_logits)


def test_label_prob_row_weight_weighs_each_row_by_the_teachers_probability_of_its_label():
    s, t, y = _batch(seed=8)
    T = 4.0
    crit = BiasAwareKD(T, 0.5, 0.5, config=bias_config("eliminate-only", eliminate=False, row_weight="label_prob"))
    loss, _ = crit(s, t, y)
    w = torch.softmax(t, 1).gather(1, y[:, None]).squeeze(1)
    kl = _kl_rows(s, torch.softmax(t / T, 1), T)
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * (w * kl).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_wsl_weights_follow_their_formula_and_lie_in_0_1_closed(seed):
    from beyondkd.bias import wsl_weights

    s, t, y = _batch(seed=seed)
    ce_s = F.cross_entropy(s, y, reduction="none")
    ce_t = F.cross_entropy(t, y, reduction="none")
    w = wsl_weights(ce_s, torch.softmax(t, 1).gather(1, y[:, None]).squeeze(1))
    assert ((w >= 0) & (w <= 1)).all()
    assert torch.allclose(w, 1 - torch.exp(-ce_s / (ce_t + 1e-7)), atol=1e-5)
    assert not w.requires_grad


def test_wsl_row_weight_in_the_loss_and_its_gradient_does_not_flow_through_the_weight():
    s, t, y = _batch(seed=9)
    s = s.clone().requires_grad_(True)
    T = 4.0
    crit = BiasAwareKD(T, 1.0, 1.0, config=bias_config("eliminate-only", row_weight="wsl"))
    loss, _ = crit(s, t, y)
    ce = F.cross_entropy(s, y, reduction="none")
    w = (1 - torch.exp(-ce.detach() / (F.cross_entropy(t, y, reduction="none") + 1e-7)))
    right = t.argmax(1) == y
    kl = _kl_rows(s, torch.softmax(t / T, 1), T)
    expected = ce.mean() + (w * kl * right).sum() / len(y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    (g1,) = torch.autograd.grad(loss, s)
    (g2,) = torch.autograd.grad(expected, s)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_wsl_without_cross_entropy_is_a_clear_error():
    plugin = BiasPlugin(bias_config("constant", row_weight="wsl"))
    s, t, y = _batch(seed=10)
    targets = plugin.teacher_targets(t, y, 4.0)
    with pytest.raises(ConfigError, match="wsl.*cross-entropy"):
        plugin.combine(None, torch.ones(len(y)), targets, None)
