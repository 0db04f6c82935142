"""Bias-aware distillation on the RoI classification head of Faster R-CNN FPN.

One training step of :class:`RoIDistiller` runs the student's torchvision components by hand
(no global monkeypatching, no change to torchvision's classes):

1. ``student.transform`` resizes and normalises the batch (and scales its boxes);
2. ``student.backbone`` gives the FPN features, ``student.rpn`` proposals and the RPN losses;
3. ``student.roi_heads.select_training_samples`` samples RoIs and matches each to a ground-truth
   box: its label is the GT label of the best-IoU box, or 0 (background) below the threshold;
4. the *same* sampled boxes go through the student's **and** the teacher's ``box_roi_pool`` →
   ``box_head`` → ``box_predictor``, each on its own FPN features of the same transformed image,
   so both classify identical boxes: ``(R, C+1)`` class logits and ``(R, 4(C+1))`` deltas.

The classification loss of the RoI head becomes CE + KD on those ``R`` rows, each RoI being one
"sample" of the classification setting. With the BTKD plug-in, the per-RoI mask is
``argmax(teacher logits) == matched label`` (background included), the wrong rows are rectified
(:func:`beyondkd.bias.rectify.rectify` via :class:`~beyondkd.bias.loss.BiasPlugin`) and γ weighs
easy and hard RoIs (BTKD eq. 8–9). The student's RPN losses and its own box-regression loss
(torchvision's ``fastrcnn_loss``) are kept unchanged. Optional terms: box-regression
distillation on foreground RoIs (the deltas of the RoI's GT class) and a FitNet term on the
FPN levels through 1×1 conv adapters.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss

from beyondkd.bias import reporting
from beyondkd.bias.loss import BiasConfig, BiasPlugin
from beyondkd.bias.mask import teacher_right_mask
from beyondkd.core import Progress, Stat, StepOutput, Trainable, freeze
from beyondkd.detection.coco import DetBatch
from beyondkd.detection.config import DetMethodConfig
from beyondkd.errors import ConfigError
from beyondkd.losses.kd import cross_entropy, kd_kl

Targets = list[dict[str, Tensor]]


@dataclass
class RoIForward:
    """The student's training forward up to its RoI head outputs.

    Attributes:
        images: the transformed batch (resized, normalised, padded).
        targets: the targets with boxes in the transformed image's pixels.
        features: FPN levels ``'0'..'3'``, ``'pool'``; each ``(B, ch, H_l, W_l)``.
        rpn_losses: ``loss_objectness`` and ``loss_rpn_box_reg``.
        proposals: sampled RoIs per image, each ``(R_i, 4)`` xyxy.
        labels: ``(R,)`` matched GT label of every sampled RoI, 0 for background.
        regression_targets: ``(R, 4)`` encoded deltas to the matched GT box.
        class_logits: ``(R, C+1)``.
        box_regression: ``(R, 4(C+1))``.
    """

    images: ImageList
    targets: Targets
    features: "OrderedDict[str, Tensor]"
    rpn_losses: dict[str, Tensor]
    proposals: list[Tensor]
    labels: Tensor
    regression_targets: Tensor
    class_logits: Tensor
    box_regression: Tensor


def sample_rois(model: FasterRCNN, images: list[Tensor], targets: Targets) -> tuple[ImageList, Targets, "OrderedDict[str, Tensor]", dict[str, Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """Steps 1–3: transform, backbone, RPN and RoI sampling of ``model`` (in training mode).

    Returns:
        ``(images, targets, features, rpn_losses, proposals, labels, regression_targets)`` with
        per-image lists for the last three.
    """
    if not model.training:
        raise RuntimeError("sample_rois needs the detector in training mode (call model.train())")
    image_list, targets_t = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, rpn_losses = model.rpn(image_list, features, targets_t)
    proposals, _, labels, regression_targets = model.roi_heads.select_training_samples(proposals, targets_t)
    return image_list, targets_t, features, rpn_losses, proposals, labels, regression_targets


def roi_head_outputs(model: FasterRCNN, features: "OrderedDict[str, Tensor]", proposals: list[Tensor], image_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Step 4 for one detector: ``(class_logits (R, C+1), box_regression (R, 4(C+1)))``."""
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, proposals, image_sizes)
    return heads.box_predictor(heads.box_head(pooled))


def student_roi_forward(model: FasterRCNN, images: list[Tensor], targets: Targets) -> RoIForward:
    """The student's forward on a training batch, stopping at its RoI head outputs."""
    image_list, targets_t, features, rpn_losses, proposals, labels, reg = sample_rois(model, images, targets)
    class_logits, box_regression = roi_head_outputs(model, features, proposals, image_list.image_sizes)
    return RoIForward(
        image_list, targets_t, features, rpn_losses, proposals,
        torch.cat(labels), torch.cat(reg), class_logits, box_regression,
    )


@torch.no_grad()
def teacher_roi_forward(teacher: FasterRCNN, images: ImageList, proposals: list[Tensor]) -> tuple[Tensor, Tensor, "OrderedDict[str, Tensor]"]:
    """The frozen teacher's RoI head on the student's sampled RoIs of the same transformed image.

    Returns:
        ``(class_logits (R, C+1), box_regression (R, 4(C+1)), features)``.
    """
    features = teacher.backbone(images.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    logits, deltas = roi_head_outputs(teacher, features, proposals, images.image_sizes)
    return logits, deltas, features


def roi_bias_mask(teacher_class_logits: Tensor, roi_labels: Tensor) -> Tensor:
    """Per-RoI BTKD mask: the teacher's top class equals the RoI's matched label.

    Args:
        teacher_class_logits: ``(R, C+1)`` teacher logits on the sampled RoIs (index 0 = background).
        roi_labels: ``(R,)`` matched labels, 0 for background RoIs.

    Returns:
        ``(R,)`` bool; a background RoI counts as right when the teacher calls it background.
    """
    return teacher_right_mask(teacher_class_logits, roi_labels)


def class_specific_deltas(box_regression: Tensor, labels: Tensor) -> Tensor:
    """The ``(R, 4)`` deltas of each RoI's own class out of ``(R, 4(C+1))`` predictions."""
    r = box_regression.shape[0]
    return box_regression.reshape(r, -1, 4)[torch.arange(r, device=labels.device), labels]


def box_distill_per_roi(
    student_box_regression: Tensor,
    teacher_box_regression: Tensor,
    labels: Tensor,
    loss: Literal["l2", "smooth_l1"] = "smooth_l1",
    beta: float = 1.0 / 9.0,
) -> Tensor:
    """Per-RoI box-regression distillation on foreground RoIs.

    Compares the student's and the teacher's deltas of the RoI's GT class, summed over the four
    coordinates: squared error (``l2``) or smooth-L1 with transition ``beta`` (as torchvision's
    ``fastrcnn_loss``). Background RoIs give 0.

    Args:
        student_box_regression, teacher_box_regression: ``(R, 4(C+1))``.
        labels: ``(R,)`` matched labels.

    Returns:
        ``(R,)`` non-negative losses.
    """
    s = class_specific_deltas(student_box_regression, labels)
    t = class_specific_deltas(teacher_box_regression, labels).detach()
    if loss == "l2":
        per = (s - t).pow(2).sum(dim=1)
    else:
        per = F.smooth_l1_loss(s, t, beta=beta, reduction="none").sum(dim=1)
    return torch.where(labels > 0, per, torch.zeros_like(per))


class FeatureAdapters(nn.Module):
    """FitNet-style 1×1 conv adapters mapping student FPN levels to the teacher's channels."""

    def __init__(self, student_channels: int, teacher_channels: int, levels: list[str]) -> None:
        super().__init__()
        self.levels = list(levels)
        self.convs = nn.ModuleDict({lvl: nn.Conv2d(student_channels, teacher_channels, 1) for lvl in self.levels})

    def forward(self, student: "OrderedDict[str, Tensor]", teacher: "OrderedDict[str, Tensor]") -> Tensor:
        """Mean over levels of the MSE between adapted student and (detached) teacher maps."""
        losses = []
        for lvl in self.levels:
            if lvl not in student or lvl not in teacher:
                raise ConfigError(f"FPN level '{lvl}' is missing: method.feature.levels must be among {', '.join(student)}")
            s, t = self.convs[lvl](student[lvl]), teacher[lvl].detach()
            if s.shape != t.shape:
                raise ConfigError(f"FPN level '{lvl}': student {tuple(s.shape)} and teacher {tuple(t.shape)} maps differ in size")
            losses.append(F.mse_loss(s, t))
        return torch.stack(losses).mean()


class SupervisedDetector(Trainable):
    """Plain training of a detector on labels (teachers and the no-distillation baseline).

    Its terms are torchvision's losses without their ``loss_`` prefix (``classifier``,
    ``box_reg``, ``objectness``, ``rpn_box_reg``).
    """

    name = "supervised"

    def __init__(self, model: FasterRCNN) -> None:
        super().__init__()
        self.student = model
        self.teacher = None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """The student's detections (evaluation)."""
        return self.student(images)

    def training_step(self, batch: DetBatch, progress: Progress) -> StepOutput:
        losses = self.student(batch.images, batch.targets)
        loss = sum(losses.values())
        return StepOutput(loss, None, {k.removeprefix("loss_"): v.detach() for k, v in losses.items()})


class RoIDistiller(Trainable):
    """KD (optionally bias-aware) from a frozen teacher detector on the student's sampled RoIs.

    Args:
        student: the Faster R-CNN being trained.
        teacher: a trained Faster R-CNN with the same number of classes (frozen here).
        method: temperature, CE/KD weights, box and feature terms.
        bias: BTKD plug-in settings, or ``None`` for plain KD.

    Statistics, summed over an epoch: ``rois`` and ``rois_fg`` (sampled RoIs, foreground ones),
    ``teacher_right`` and ``teacher_right_fg`` (RoIs whose teacher top class is the matched
    label), with the plug-in ``rectified_top_is_label``; ``gamma`` (mean) and ``gamma_last``.
    The epoch record adds ``teacher_roi_acc`` and ``teacher_roi_acc_fg``.
    """

    name = "roi_kd"

    def __init__(self, student: FasterRCNN, teacher: FasterRCNN, method: DetMethodConfig, bias: BiasConfig | None) -> None:
        super().__init__()
        s_out = student.roi_heads.box_predictor.cls_score.out_features
        t_out = teacher.roi_heads.box_predictor.cls_score.out_features
        if s_out != t_out:
            raise ConfigError(f"student predicts {s_out - 1} classes but teacher {t_out - 1}: both need the dataset's class count")
        for attr in ("image_mean", "image_std", "min_size", "max_size"):
            if getattr(student.transform, attr) != getattr(teacher.transform, attr):
                raise ConfigError(f"student and teacher transforms differ in {attr}: both must see the same resized image")
        self.student = student
        self.teacher = freeze(teacher)  # inference mode (frozen BN, no dropout), no gradient
        self.method = method
        self.bias = BiasPlugin(bias) if bias is not None else None
        self.adapters: FeatureAdapters | None = None
        if method.feature.weight > 0:
            self.adapters = FeatureAdapters(student.backbone.out_channels, teacher.backbone.out_channels, method.feature.levels)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """The student's detections (evaluation)."""
        return self.student(images)

    def training_step(self, batch: DetBatch, progress: Progress) -> StepOutput:
        m = self.method
        fwd = student_roi_forward(self.student, batch.images, batch.targets)
        t_logits, t_deltas, t_features = teacher_roi_forward(self.teacher, fwd.images, fwd.proposals)
        labels = fwd.labels
        s_logits, t_logits = fwd.class_logits.float(), t_logits.float()  # losses in fp32 under autocast
        _, loss_box_reg = fastrcnn_loss(s_logits, fwd.box_regression.float(), [labels], [fwd.regression_targets])
        ce = cross_entropy(s_logits, labels)
        right = roi_bias_mask(t_logits, labels)
        stats: dict[str, Stat] = {
            "rois": Stat(torch.full((), labels.numel(), device=labels.device), "sum"),
            "rois_fg": Stat((labels > 0).sum(), "sum"),
            "teacher_right": Stat(right.sum(), "sum"),
            "teacher_right_fg": Stat((right & (labels > 0)).sum(), "sum"),
        }
        if self.bias is None:
            distill = kd_kl(s_logits, t_logits, m.temperature)
            ce_term, kd_term = m.ce_weight * ce.mean(), m.kd_weight * distill.mean()
            loss_cls = ce_term + kd_term
            terms = {"ce": ce_term.detach(), "kd": kd_term.detach()}
        else:
            bt = self.bias.teacher_targets(t_logits, labels, m.temperature)
            distill = kd_kl(s_logits, bt.teacher_logits, m.temperature)
            loss_cls, parts = self.bias.combine(ce, distill, bt, progress, m.ce_weight, m.kd_weight)
            terms = {k: parts[k] for k in ("ce", "kd_easy", "kd_hard")}
            plugin = reporting.step_stats(parts)
            stats.update(gamma=plugin["gamma"], gamma_last=plugin["gamma_last"],
                         rectified_top_is_label=plugin["rows_rectified_top_is_label"])
        loss = loss_cls + loss_box_reg + fwd.rpn_losses["loss_objectness"] + fwd.rpn_losses["loss_rpn_box_reg"]
        terms.update(
            box_reg=loss_box_reg.detach(),
            objectness=fwd.rpn_losses["loss_objectness"].detach(),
            rpn_box_reg=fwd.rpn_losses["loss_rpn_box_reg"].detach(),
        )
        if m.box.weight > 0:
            per = box_distill_per_roi(fwd.box_regression.float(), t_deltas.float(), labels, m.box.loss, m.box.beta)
            box_term = m.box.weight * per.sum() / max(labels.numel(), 1)  # fastrcnn_loss's normalisation
            loss = loss + box_term
            terms["box_kd"] = box_term.detach()
        if self.adapters is not None:
            feat_term = m.feature.weight * self.adapters(fwd.features, t_features)
            loss = loss + feat_term
            terms["feature"] = feat_term.detach()
        return StepOutput(loss, None, terms, stats)

    def epoch_fields(self, reduced: dict[str, float]) -> dict[str, float]:
        """The teacher's accuracy on the epoch's sampled RoIs, all and foreground."""
        out = {}
        if reduced.get("rois"):
            out["teacher_roi_acc"] = reduced["teacher_right"] / reduced["rois"]
        if reduced.get("rois_fg"):
            out["teacher_roi_acc_fg"] = reduced["teacher_right_fg"] / reduced["rois_fg"]
        return out
