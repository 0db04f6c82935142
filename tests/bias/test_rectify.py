"""Properties of bias elimination and rectification (BTKD eq. 3–7) for every variant."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from beyondkd.bias import (
    RECTIFY_VARIANTS,
    paper_formula_on_logits,
    paper_rectified_pair,
    rectified_teacher_logits,
    rectify,
    teacher_right_mask,
)

# Finite logits, including huge magnitudes and exact ties (small integer grids produce ties).
logit_value = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32),
    st.integers(min_value=-3, max_value=3).map(float),
)


@st.composite
def batches(draw, min_classes: int = 2, max_classes: int = 7):
    c = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 6))
    z = torch.tensor(draw(st.lists(st.lists(logit_value, min_size=c, max_size=c), min_size=n, max_size=n)), dtype=torch.float32)
    y = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=torch.long)
    return z, y


def _reference_paper_row(t: list[float], a: int) -> list[float]:
    """Eq. 4-7 on one wrong row, written out scalar by scalar."""
    b = max(range(len(t)), key=lambda i: (t[i], -i))
    ta, tb = t[a], t[b]
    ta1, tb1 = (ta + 1) / 2, tb / 2
    k = (ta + tb) / (ta1 + tb1)
    out = list(t)
    out[a], out[b] = ta1 * k, tb1 * k
    return out


def test_mask_matches_argmax():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    assert teacher_right_mask(z, y).tolist() == [True, False, False]  # tie -> lowest index


def test_mask_rejects_bad_shapes():
    with pytest.raises(ValueError, match="target must be"):
        teacher_right_mask(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_paper_example_from_shared_notes_keeps_a_wrong_top_class():
    t = torch.tensor([[0.0, 0.34, 0.33, 0.33]])
    out = rectify(t, torch.tensor([0]), "paper")
    assert out[0, 0].item() == pytest.approx(0.34 * 0.5 / 0.67, abs=1e-6)  # ≈ 0.2537 < 0.33
    assert out.argmax(1).item() != 0
    assert rectify(t, torch.tensor([0]), "strict").argmax(1).item() == 0


def test_paper_variant_matches_scalar_reference():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(64, 6, generator=g) * 3, dim=1)
    y = torch.randint(0, 6, (64,), generator=g)
    out = rectify(p, y, "paper")
    for i in range(64):
        if p[i].argmax() != y[i]:
            ref = _reference_paper_row(p[i].tolist(), int(y[i]))
            assert out[i].tolist() == pytest.approx(ref, abs=1e-6)


@given(st.floats(0, 1), st.floats(0, 1))
def test_paper_pair_preserves_mass_and_orders(ta, tb):
    assume(ta + tb <= 1)
    na, nb = paper_rectified_pair(torch.tensor([ta]), torch.tensor([tb]))
    assert (na + nb).item() == pytest.approx(ta + tb, abs=1e-6)
    assert na.item() >= nb.item() - 1e-7  # eq. 4: t'_a >= 1/2 >= t'_b before rescaling


@pytest.mark.parametrize("variant", RECTIFY_VARIANTS)
@settings(max_examples=150, deadline=None)
@given(batch=batches())
def test_rectify_invariants(variant, batch):
    z, y = batch
    p = torch.softmax(z, dim=1)
    out = rectify(p, y, variant)
    right = teacher_right_mask(p, y)
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    assert torch.allclose(out.sum(1), p.sum(1), atol=1e-5)  # rows still sum to 1
    assert torch.equal(out[right], p[right])  # right rows bit-for-bit unchanged
    if variant in ("paper", "swap"):
        b = p.argmax(1)
        untouched = torch.ones_like(p, dtype=torch.bool)
        untouched[torch.arange(len(y)), y] = False
        untouched[torch.arange(len(y)), b] = False
        assert torch.equal(out[untouched], p[untouched])  # other classes untouched


@settings(max_examples=300, deadline=None)
@given(batch=batches())
def test_strict_always_puts_the_label_on_top(batch):
    z, y = batch
    p = torch.softmax(z, dim=1)
    out = rectify(p, y, "strict")
    assert torch.equal(out.argmax(1), y)
    # on rectified rows strictly: the label beats every other class (no tie left to argmax)
    wrong = ~teacher_right_mask(p, y)
    others = out.clone()
    others[torch.arange(len(y)), y] = -1.0
    assert (out[torch.arange(len(y)), y] > others.max(1).values)[wrong].all()


@settings(max_examples=200, deadline=None)
@given(batch=batches())
def test_strict_leaves_other_classes_alone_unless_impossible(batch):
    z, y = batch
    p = torch.softmax(z, dim=1)
    out = rectify(p, y, "strict")
    n = torch.arange(len(y))
    b = p.argmax(1)
    mass = p[n, y] + p[n, b]
    others = p.clone()
    others[n, y] = 0
    others[n, b] = 0
    possible = mass > others.max(1).values * (1 + 1e-3) + 1e-6
    keep = torch.ones_like(p, dtype=torch.bool)
    keep[n, y] = False
    keep[n, b] = False
    for i in range(len(y)):
        if possible[i]:
            assert torch.equal(out[i][keep[i]], p[i][keep[i]])


def test_saturated_row_paper_ties_strict_does_not():
    p = torch.tensor([[0.0, 1.0, 0.0]])
    y = torch.tensor([0])
    assert rectify(p, y, "paper").tolist() == [[0.5, 0.5, 0.0]]
    assert rectify(p, y, "strict").argmax(1).item() == 0
    assert rectify(p, y, "swap").tolist() == [[1.0, 0.0, 0.0]]


def test_label_smooth_variant():
    p = torch.tensor([[0.1, 0.7, 0.2]])
    out = rectify(p, torch.tensor([2]), "label_smooth", smoothing=0.3)
    assert out.tolist()[0] == pytest.approx([0.1, 0.1, 0.8])


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown rectification variant 'strikt'"):
        rectify(torch.eye(3), torch.tensor([0, 1, 2]), "strikt")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", RECTIFY_VARIANTS)
@settings(max_examples=100, deadline=None)
@given(batch=batches(), temperature=st.sampled_from([0.5, 1.0, 4.0]))
def test_rectified_logits_reproduce_rectified_probs(variant, batch, temperature):
    z, y = batch
    zr = rectified_teacher_logits(z, y, temperature, variant)
    assert torch.isfinite(zr).all()
    # the mask is the logits' (a near-tie that the softmax rounds away is still decided there)
    expected = rectify(torch.softmax(z / temperature, 1), y, variant, right=teacher_right_mask(z, y), top=z.argmax(1))
    assert torch.allclose(torch.softmax(zr / temperature, 1), expected, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(batch=batches())
def test_paper_formula_on_logits_never_divides_by_zero(batch):
    z, y = batch
    out = paper_formula_on_logits(z, y)
    assert torch.isfinite(out).all()
    right = teacher_right_mask(z, y)
    assert torch.equal(out[right], z[right])


def test_paper_formula_on_logits_at_the_singular_point():
    z = torch.tensor([[-0.5, -0.5 + 1e-9, -3.0]])  # z_a + z_b = -1, teacher picks class 1
    out = paper_formula_on_logits(z, torch.tensor([0]))
    assert torch.isfinite(out).all() and not math.isnan(out.sum().item())


def test_random_wrong_rows_share_keeping_a_wrong_top_class():
    """The shared notes report ~13% of random wrong rows keep a wrong top class under eq. 7."""
    g = torch.Generator().manual_seed(1)
    e = -torch.rand(20000, 10, generator=g).log()  # Dirichlet(1, ..., 1) rows
    p = e / e.sum(1, keepdim=True)
    y = torch.randint(0, 10, (20000,), generator=g)
    wrong = p.argmax(1) != y
    out = rectify(p, y, "paper")
    frac = (out[wrong].argmax(1) != y[wrong]).float().mean().item()
    assert 0.01 < frac < 0.5  # a real share, not a rounding artefact
    assert (rectify(p, y, "strict")[wrong].argmax(1) == y[wrong]).all()


# -- one mask (the plug-in's, from the logits) and the input's dtype -----------------------------
def _near_tie(label_leads: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose label (class 1) leads or trails class 0 by 1e-7, less than the softmax resolves at T = 4."""
    eps = 1e-7
    z = torch.tensor([[0.0, eps, -3.0]]) if label_leads else torch.tensor([[eps, 0.0, -3.0]])
    return z, torch.tensor([1])


@pytest.mark.parametrize("variant", RECTIFY_VARIANTS)
def test_a_row_right_by_one_ulp_is_never_rectified(variant):
    z, y = _near_tie(label_leads=True)
    assert teacher_right_mask(z, y).item()
    # the float32 softmax at T = 4 rounds the lead away: the probabilities tie, argmax says class 0
    assert torch.softmax(z / 4.0, 1).argmax(1).item() == 0
    zr = rectified_teacher_logits(z, y, 4.0, variant)
    assert torch.equal(zr, 4.0 * torch.log_softmax(z / 4.0, 1))


@pytest.mark.parametrize("variant", RECTIFY_VARIANTS)
def test_a_row_wrong_by_one_ulp_is_rectified_toward_the_label(variant):
    z, y = _near_tie(label_leads=False)
    assert not teacher_right_mask(z, y).item()
    zr = rectified_teacher_logits(z, y, 4.0, variant)
    p, q = torch.softmax(z / 4.0, 1), torch.softmax(zr / 4.0, 1)
    assert torch.isfinite(zr).all()
    assert q[0, 1] >= p[0, 1] - 1e-6  # the label never loses mass
    assert q.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_rectify_takes_the_callers_mask():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    y = torch.tensor([0, 0])
    keep_all = torch.tensor([True, True])
    assert torch.equal(rectify(p, y, "swap", right=keep_all), p)
    with pytest.raises(ValueError, match="bool mask"):
        rectify(p, y, "swap", right=torch.tensor([1, 1]))


@pytest.mark.parametrize("variant", RECTIFY_VARIANTS)
def test_float64_is_computed_in_float64(variant):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (64,), generator=g)
    p = torch.softmax(z, 1)
    out = rectify(p, y, variant)
    assert out.dtype == torch.float64
    assert torch.allclose(out.sum(1), torch.ones(64, dtype=torch.float64), atol=1e-12)
    zr = rectified_teacher_logits(z, y, 2.0, variant)
    assert zr.dtype == torch.float64
    assert torch.allclose(torch.softmax(zr / 2.0, 1), rectify(torch.softmax(z / 2.0, 1), y, variant, right=teacher_right_mask(z, y), top=z.argmax(1)), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(dtype):
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(32, 5, generator=g) * 2, 1)
    y = torch.randint(0, 5, (32,), generator=g)
    out = rectify(p.to(dtype), y, "paper")
    assert out.dtype == dtype
    assert torch.allclose(out.float(), rectify(p.to(dtype).float(), y, "paper"), atol=1e-2)


# -- toward_label: move a wrong row toward the label in proportion to the teacher's error ----------
@settings(max_examples=200, deadline=None)
@given(batch=batches())
def test_toward_label_makes_the_label_the_strict_top_and_keeps_the_others_ratios(batch):
    z, y = batch
    p = torch.softmax(z.double(), 1)
    out = rectify(p, y, "toward_label")
    right = teacher_right_mask(p, y)
    assert torch.equal(out[right], p[right])
    assert torch.allclose(out.sum(1), torch.ones(len(y), dtype=torch.float64), atol=1e-9)
    for i in torch.nonzero(~right).flatten().tolist():
        a = int(y[i])
        t_a = float(p[i, a])
        assert float(out[i, a]) == pytest.approx(1 - t_a + t_a * t_a, abs=1e-9)
        others = [c for c in range(p.shape[1]) if c != a]
        assert all(float(out[i, a]) > float(out[i, c]) for c in others)
        for c in others:  # every other class is scaled by the same factor t_a
            assert float(out[i, c]) == pytest.approx(t_a * float(p[i, c]), abs=1e-12)


@pytest.mark.parametrize("variant", ["paper", "strict", "swap"])
def test_the_teachers_top_class_is_decided_on_the_logits_not_on_a_rounded_softmax(variant):
    # class 2 leads by 6e-8: the softmax of these logits ties all three, so argmax of it would say class 1
    z, y = torch.tensor([[0.0, 0.0, 5.96e-08]]), torch.tensor([0])
    q = torch.softmax(rectified_teacher_logits(z, y, 1.0, variant), 1)[0]
    assert q[1].item() == pytest.approx(1 / 3, abs=1e-6)  # the untouched class is 1, not the teacher's top class 2
