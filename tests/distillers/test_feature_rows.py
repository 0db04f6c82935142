"""Feature methods and the plug-in's rows: the "X + KD" control, and feature terms per teacher-right row."""

from __future__ import annotations

import pytest
import torch

from beyondkd.bias.loss import BiasConfig
from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.errors import ConfigError
from beyondkd.models.registry import build_model

PER_SAMPLE = ["fitnet", "at", "ofd", "reviewkd", "indistill"]
CONTEXT = DistillerContext(num_classes=10, in_channels=1, image_size=28, num_samples=64, total_steps=20, total_epochs=4)
#: after InDistill's warm-up (one epoch for each of its two layer pairs here), where its KD term acts
KD_STAGE = Progress(step=12, total_steps=20, epoch=3, total_epochs=4)
WARM_UP = Progress(step=0, total_steps=20, epoch=0, total_epochs=4)


def _build(method: str, params: dict | None = None, bias: BiasConfig | None = None):
    torch.manual_seed(0)
    params = dict(params or {})
    if method == "indistill":
        params.setdefault("curriculum_epochs", [1, 1])
    return build_distiller(method, build_model("cnn_tiny", 10, 1), build_model("cnn_small", 10, 1), params, bias, CONTEXT)


def _images(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _batch(d, right: list[bool]) -> Batch:
    """A batch whose labels make the teacher right exactly on the rows flagged in ``right``."""
    images = _images(len(right))
    with torch.no_grad():
        top = d.teacher(images).argmax(1)
    targets = torch.where(torch.tensor(right), top, (top + 1) % 10)
    return Batch(images, targets, torch.arange(len(right)), None)


# -- "X + KD": the control of "X + plug-in" ------------------------------------------------------

@pytest.mark.parametrize("method", ["fitnet", "at", "sp", "rkd", "ofd", "reviewkd", "indistill", "crd"])
def test_x_plus_kd_computes_the_loss_of_x_plus_plugin_with_elimination_and_rectification_off(method):
    # the plug-in rows of a feature method use KD 0.9 at T = 4 (CRD: the kd_weight its config sets)
    kd = {"kd_weight": 1.0, "nce_k": 16} if method == "crd" else {"kd_weight": 0.9}
    control = _build(method, params=kd)
    plugin = _build(method, params=kd if method == "crd" else {}, bias=BiasConfig(eliminate=False, rectify=False))
    batch = Batch(_images(), torch.arange(8) % 10, torch.arange(8), None)
    progress = KD_STAGE if method == "indistill" else WARM_UP
    torch.manual_seed(3)  # CRD draws its negatives
    a = control.training_step(batch, progress)
    torch.manual_seed(3)
    b = plugin.training_step(batch, progress)
    assert a.terms["kd"] > 0
    assert torch.allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    assert torch.allclose(a.terms["kd"], b.terms["kd_easy"] + b.terms["kd_hard"], rtol=1e-6, atol=1e-7)
    a.loss.backward()
    b.loss.backward()
    for p, q in zip(control.student.parameters(), plugin.student.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_the_plugin_with_elimination_on_differs_from_the_control():
    # the control is not trivially equal to every plug-in setting: dropping wrong rows changes the loss
    right = [True, False] * 4
    control = _build("fitnet", params={"kd_weight": 0.9})
    plugin = _build("fitnet", bias=BiasConfig(eliminate=True, rectify=False))
    batch = _batch(control, right)
    assert not torch.allclose(control.training_step(batch, WARM_UP).loss, plugin.training_step(batch, WARM_UP).loss)


# -- feature_rows ----------------------------------------------------------------------------------

def _features(d, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Student features as leaves (so gradients per row can be read), teacher features and logits."""
    teacher_logits, t_all = d.teacher_forward_with_features(batch.images, d.teacher_hooks)
    d.student(batch.images)
    s_feats = [d.student_hooks.features[n].detach().requires_grad_() for n in d.student_points]
    t_feats = [t_all[n] for n in d.teacher_points]
    d.release_features()
    return s_feats, t_feats, teacher_logits


def _loss_fn(d, method: str):
    if method == "indistill":  # the warm-up's first layer pair
        return lambda s, t: d.layer_loss(0, s[0], t[0])
    return lambda s, t: d.feature_loss(s, t, WARM_UP)


@pytest.mark.parametrize("method", PER_SAMPLE)
def test_right_rows_only_wrong_rows_contribute_exactly_nothing_to_the_feature_term_or_its_gradient(method):
    right = [True, False, True, True, False, False, True, False]
    wrong = ~torch.tensor(right)
    d = _build(method, params={"feature_rows": "right"})
    d.train()  # connectors' batch norms use batch statistics
    batch = _batch(d, right)
    s_feats, t_feats, t_logits = _features(d, batch)
    if method == "indistill":
        s_feats, t_feats = s_feats[:1], t_feats[:1]
    loss = _loss_fn(d, method)
    term = d.feature_term(loss, s_feats, t_feats, t_logits, batch.targets)
    grads = torch.autograd.grad(term, s_feats, allow_unused=True)
    assert term > 0
    for g in grads:
        if g is not None:
            assert torch.equal(g[wrong], torch.zeros_like(g[wrong]))
    assert any(g is not None and g[~wrong].abs().sum() > 0 for g in grads)
    # the wrong rows' student features can be anything: the term does not move
    noisy = [torch.where(wrong.view(-1, *[1] * (s.dim() - 1)), 100 * torch.randn_like(s), s) for s in s_feats]
    assert torch.equal(d.feature_term(loss, noisy, t_feats, t_logits, batch.targets), term)
    # ... whereas over all rows it does (the check above has power)
    d.params.feature_rows = "all"
    assert not torch.allclose(d.feature_term(loss, noisy, t_feats, t_logits, batch.targets),
                              d.feature_term(loss, s_feats, t_feats, t_logits, batch.targets))


@pytest.mark.parametrize("method", PER_SAMPLE)
def test_right_rows_equal_all_rows_when_the_teacher_is_right_everywhere(method):
    d = _build(method, params={"feature_rows": "right"})
    d.eval()
    batch = _batch(d, [True] * 8)
    s_feats, t_feats, t_logits = _features(d, batch)
    loss = _loss_fn(d, method)
    kept = d.feature_term(loss, s_feats, t_feats, t_logits, batch.targets)
    d.params.feature_rows = "all"
    assert torch.allclose(kept, d.feature_term(loss, s_feats, t_feats, t_logits, batch.targets), rtol=1e-6)


@pytest.mark.parametrize("method", PER_SAMPLE)
def test_a_batch_the_teacher_gets_all_wrong_has_a_zero_feature_term_and_still_trains(method):
    d = _build(method, params={"feature_rows": "right"}, bias=BiasConfig())
    out = d.training_step(_batch(d, [False] * 8), WARM_UP)
    assert float(out.terms["feat"]) == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()
    # every parameter the feature term reaches has a gradient (zero, not missing): ranks stay in step
    connectors = [p for n, p in d.named_parameters() if not n.startswith(("student.", "teacher."))]
    assert all(p.grad is not None for p in connectors)


def test_label_prob_weighs_each_row_by_the_teachers_probability_of_its_label():
    d = _build("fitnet", params={"feature_rows": "label_prob"})
    d.eval()
    batch = _batch(d, [True, False] * 4)
    s_feats, t_feats, t_logits = _features(d, batch)
    loss = _loss_fn(d, "fitnet")
    per_row = loss(s_feats, t_feats)
    p = torch.softmax(t_logits, 1)[torch.arange(8), batch.targets]
    assert torch.allclose(d.feature_term(loss, s_feats, t_feats, t_logits, batch.targets), (p * per_row).mean(), rtol=1e-6)


@pytest.mark.parametrize("method", ["sp", "rkd"])
def test_batch_relational_methods_refuse_feature_rows_in_one_line(method):
    with pytest.raises(ConfigError) as info:
        _build(method, params={"feature_rows": "right"})
    msg = str(info.value)
    assert "\n" not in msg and "relations between the rows" in msg and "feature_rows" in msg
