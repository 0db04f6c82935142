"""The DKD distiller: warm-up, the plug-in routing, gradients."""

from __future__ import annotations

import pytest
import torch

from beyondkd.distillers.dkd import warmup_factor
from beyondkd.losses.dkd import dkd_loss
from beyondkd.losses.kd import cross_entropy
from tests.distillers._zoo_helpers import batch, grads_ok, make, progress


def test_warmup_is_linear_then_one():
    assert [warmup_factor(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_loss_is_ce_plus_warmed_dkd():
    d = make("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 4})
    b = batch()
    d.train()
    out = d.training_step(b, progress(epoch=1))
    with torch.no_grad():
        s, t = out.logits, d.teacher(b.images)
    expected = cross_entropy(s, b.targets).mean() + 0.5 * dkd_loss(s, t, b.targets, 1.0, 8.0, 4.0).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.stats["dkd_warmup"].item() == 0.5
    out.loss.backward()
    grads_ok(d)


@pytest.mark.parametrize("preset", ["paper", "constant", "official-code"])
def test_with_the_plugin_terms_are_finite_and_split(preset):
    d = make("dkd", {"warmup_epochs": 1}, bias=preset)
    out = d.training_step(batch(16), progress(2))
    assert {"ce", "kd_easy", "kd_hard"} <= set(out.terms)
    assert out.stats["rows"].item() == 16
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads_ok(d)


def test_student_equal_to_teacher_gives_ce_only():
    d = make("dkd", {"warmup_epochs": 0}, teacher="cnn_tiny")
    d.teacher.load_state_dict(d.student.state_dict())
    d.student.eval()  # same BN behaviour as the (always eval) teacher
    out = d.training_step(batch(), progress())
    assert out.terms["kd"].abs().item() < 1e-4
