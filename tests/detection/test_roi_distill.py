"""RoI matching, the per-RoI bias mask, the box and feature terms, and the distiller's loss."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from beyondkd.bias.loss import BiasPlugin, bias_config
from beyondkd.bias.schedule import Progress
from beyondkd.detection.coco import CocoDetectionData, DetBatch, collate
from beyondkd.detection.config import DetDataConfig, DetMethodConfig, DetModelConfig
from beyondkd.detection.models import build_detector
from beyondkd.detection.roi_distill import (
    FeatureAdapters,
    RoIDistiller,
    box_distill_per_roi,
    class_specific_deltas,
    roi_bias_mask,
    sample_rois,
    student_roi_forward,
    teacher_roi_forward,
)
from beyondkd.errors import ConfigError
from beyondkd.losses.kd import cross_entropy, kd_kl
from tests.detection.tiny_coco import tiny_model

DATA = DetDataConfig(min_size=64, max_size=64)


def _detector(**extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(DetModelConfig(**tiny_model(**extra)), DATA)


def _batch(tiny_coco: dict[str, str], n: int = 2) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    ds = CocoDetectionData(tiny_coco["train_images"], tiny_coco["train_annotations"], train=False)
    return collate([ds[i] for i in range(n)])


def test_sampled_roi_labels_are_the_best_iou_gt_label_or_background(tiny_coco: dict[str, str]) -> None:
    model = _detector().train()
    images, targets = _batch(tiny_coco)
    with torch.no_grad():
        _, targets_t, _, _, proposals, labels, _ = sample_rois(model, images, targets)
    fg_thresh = model.roi_heads.proposal_matcher.high_threshold
    bg_thresh = model.roi_heads.proposal_matcher.low_threshold
    n_fg = 0
    for props, labs, tgt in zip(proposals, labels, targets_t):
        iou = box_iou(props, tgt["boxes"])  # (R_i, M_i)
        best, idx = iou.max(dim=1)
        expected = torch.where(best >= fg_thresh, tgt["labels"][idx], torch.zeros_like(idx))
        assert torch.equal(labs, expected)
        assert bool((best[labs == 0] < bg_thresh).all())
        n_fg += int((labs > 0).sum())
    assert n_fg > 0  # the GT boxes themselves are among the proposals


def test_roi_bias_mask_on_hand_made_logits() -> None:
    # 4 RoIs, background + 3 classes
    logits = torch.tensor([
        [5.0, 0.0, 0.0, 0.0],  # teacher: background; RoI is background  -> right
        [5.0, 1.0, 0.0, 0.0],  # teacher: background; RoI is class 1      -> wrong
        [0.0, 0.0, 3.0, 1.0],  # teacher: class 2; RoI is class 2         -> right
        [0.0, 4.0, 3.0, 1.0],  # teacher: class 1; RoI is background      -> wrong
    ])
    labels = torch.tensor([0, 1, 2, 0])
    assert roi_bias_mask(logits, labels).tolist() == [True, False, True, False]


def test_bias_plugin_rectifies_wrong_rois_on_detection_logits() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    labels = torch.tensor([1, 2])
    bt = BiasPlugin(bias_config("strict")).teacher_targets(logits, labels, temperature=1.0)
    assert bt.right.tolist() == [False, True]
    assert bt.teacher_logits.argmax(dim=1).tolist() == [1, 2]  # the wrong RoI now points at its label
    assert torch.allclose(torch.softmax(bt.teacher_logits[1], 0), torch.softmax(logits[1], 0))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_box_distillation_reads_only_the_gt_class_deltas_of_foreground_rois(r: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c + 1, (r,), generator=g)
    s = torch.randn(r, 4 * (c + 1), generator=g)
    t = torch.randn(r, 4 * (c + 1), generator=g)
    for kind in ("l2", "smooth_l1"):
        per = box_distill_per_roi(s, t, labels, kind)
        assert per.shape == (r,) and bool((per >= 0).all())
        assert bool((per[labels == 0] == 0).all())
        # changing the deltas of any other class leaves the loss unchanged
        other = s.clone().reshape(r, c + 1, 4)
        keep = class_specific_deltas(s, labels)
        other += torch.randn(other.shape, generator=g)
        other[torch.arange(r), labels] = keep
        assert torch.allclose(box_distill_per_roi(other.reshape(r, -1), t, labels, kind), per)
        assert torch.allclose(box_distill_per_roi(t, t, labels, kind), torch.zeros(r))
    sel = class_specific_deltas(s, labels) - class_specific_deltas(t, labels)
    l2 = box_distill_per_roi(s, t, labels, "l2")
    assert torch.allclose(l2, torch.where(labels > 0, sel.pow(2).sum(1), torch.zeros(r)), atol=1e-6)


def test_teacher_classifies_the_students_boxes_identically_when_it_is_the_student(tiny_coco: dict[str, str]) -> None:
    student = _detector(norm="frozen").train()
    teacher = copy.deepcopy(student).eval()
    images, targets = _batch(tiny_coco)
    fwd = student_roi_forward(student, images, targets)
    t_logits, t_deltas, t_feats = teacher_roi_forward(teacher, fwd.images, fwd.proposals)
    assert t_logits.shape == fwd.class_logits.shape == (fwd.labels.numel(), 4)
    assert torch.allclose(t_logits, fwd.class_logits, atol=1e-5)
    assert torch.allclose(t_deltas, fwd.box_regression, atol=1e-5)
    assert not t_logits.requires_grad
    assert set(t_feats) == set(fwd.features)


def test_kd_step_equals_ce_plus_kd_plus_detector_terms(tiny_coco: dict[str, str]) -> None:
    student = _detector().train()
    torch.manual_seed(1)
    teacher = _detector()
    method = DetMethodConfig(temperature=2.0, ce_weight=0.5, kd_weight=2.0)
    distiller = RoIDistiller(student, teacher, method, None).train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    images, targets = _batch(tiny_coco)
    torch.manual_seed(3)
    out = distiller.training_step(DetBatch(images, targets), Progress(0, 10))
    assert out.loss.requires_grad
    assert torch.allclose(out.loss.detach(), sum(out.terms.values()), atol=1e-5)
    # recompute the classification part by hand on the same RoIs
    torch.manual_seed(3)
    fwd = student_roi_forward(student, images, targets)
    t_logits, _, _ = teacher_roi_forward(teacher, fwd.images, fwd.proposals)
    ce = cross_entropy(fwd.class_logits, fwd.labels).mean()
    kd = kd_kl(fwd.class_logits, t_logits, 2.0).mean()
    assert torch.allclose(out.terms["ce"], 0.5 * ce.detach(), atol=1e-5)
    assert torch.allclose(out.terms["kd"], 2.0 * kd.detach(), atol=1e-5)
    assert int(out.stats["rois"]) == fwd.labels.numel()
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_btkd_step_routes_rois_through_the_bias_plugin(tiny_coco: dict[str, str]) -> None:
    student = _detector().train()
    torch.manual_seed(1)
    teacher = _detector()
    method = DetMethodConfig(box={"weight": 1.0, "loss": "l2"}, feature={"weight": 0.5, "levels": ["0", "pool"]})
    distiller = RoIDistiller(student, teacher, method, bias_config("paper")).train()
    images, targets = _batch(tiny_coco)
    out = distiller.training_step(DetBatch(images, targets), Progress(5, 10))
    assert {"ce", "kd_easy", "kd_hard", "box_kd", "feature", "box_reg"} <= set(out.terms)
    assert float(out.stats["gamma"]) == pytest.approx(0.5)
    assert torch.allclose(out.loss.detach(), sum(out.terms.values()), atol=1e-5)
    assert 0 <= int(out.stats["teacher_right"]) <= int(out.stats["rois"])
    out.loss.backward()
    assert all(p.grad is not None for p in distiller.adapters.parameters())


def test_feature_adapters_map_student_channels_to_the_teacher() -> None:
    adapters = FeatureAdapters(8, 16, ["0"])
    s = {"0": torch.randn(2, 8, 4, 4)}
    t = {"0": torch.randn(2, 16, 4, 4)}
    assert adapters(s, t).shape == ()
    with pytest.raises(ConfigError, match="missing"):
        FeatureAdapters(8, 16, ["5"])(s, t)


def test_class_count_mismatch_between_student_and_teacher_is_one_line() -> None:
    student = _detector()
    teacher = build_detector(DetModelConfig(**tiny_model(num_classes=5)), DATA)
    with pytest.raises(ConfigError, match="student predicts 3 classes but teacher 5") as exc:
        RoIDistiller(student, teacher, DetMethodConfig(), None)
    assert "\n" not in str(exc.value)


def test_a_teacher_identical_to_the_student_gives_zero_kd_and_the_students_mask(tiny_coco: dict[str, str]) -> None:
    student = _detector(norm="frozen").train()
    teacher = copy.deepcopy(student)
    images, targets = _batch(tiny_coco)
    kd = RoIDistiller(student, teacher, DetMethodConfig(temperature=4.0), None).train()
    torch.manual_seed(7)
    out = kd.training_step(DetBatch(images, targets), Progress(0, 1))
    assert float(out.terms["kd"]) == pytest.approx(0.0, abs=1e-6)
    btkd = RoIDistiller(student, teacher, DetMethodConfig(), bias_config("strict")).train()
    torch.manual_seed(7)
    out = btkd.training_step(DetBatch(images, targets), Progress(0, 1))
    torch.manual_seed(7)
    fwd = student_roi_forward(student, images, targets)
    right = fwd.class_logits.argmax(1) == fwd.labels
    assert int(out.stats["teacher_right"]) == int(right.sum())
    # strict rectification points every wrong RoI at its label
    assert int(out.stats["rectified_top_is_label"]) == int((~right).sum())
