"""Contrastive representation distillation (CRD, Tian et al., ICLR 2020).

``L = w_ce · CE + w_kd · KD + w_crd · (NCE_s + NCE_t)`` (the paper's CIFAR-100 setting: CE 1,
KD 0, CRD 0.8; "CRD+KD" sets KD to 1).

* The penultimate features (the models' ``pool`` feature point, read with
  :class:`~beyondkd.models.features.FeatureHooks`) of student and teacher are embedded by one
  linear layer each into ``feat_dim = 128`` dimensions and L2-normalised. Both embedding layers
  are trained with the student (the teacher network stays frozen).
* Two memory banks of ``num_samples × feat_dim`` (buffers, saved in checkpoints) keep a
  momentum average of every training sample's student and teacher embedding.
* For each sample, ``nce_k`` negatives are drawn uniformly on the training device
  (``torch.randint``, never the sample itself); the student embedding is contrasted against the
  teacher bank and vice versa (:mod:`beyondkd.losses.crd`).

Differences from the authors' code, on purpose: negatives are uniform over the other samples
(the authors' CIFAR loader draws them from *other classes* on the CPU, per sample); the embedding
of the teacher reads detached features (the teacher gets no gradient either way).

Plug-in (``method.bias``), as "CRD + Ours" in BTKD Table 6: the contrastive term is left as is
(it transfers features, where "right" and "wrong" are not defined per class) and the KD logit
term beside it becomes bias-aware: elimination, rectification at ``temperature`` and γ weighting
of the easy/hard sets apply to ``CE + KD``; ``w_crd · NCE`` is added outside the γ weighting. A
KD term is needed for the plug-in to act, so ``kd_weight`` must be > 0 with ``method.bias``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from beyondkd.core import Batch, Progress, StepOutput
from beyondkd.distillers.base import Distiller, DistillerContext
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.crd import contrast_scores, momentum_update, nce_loss, sample_negatives
from beyondkd.losses.kd import kd_kl
from beyondkd.losses.precision import loss_dtype
from beyondkd.models.features import FeatureHooks


class CRDParams(BaseModel):
    """CRD hyper-parameters (the paper's CIFAR-100 defaults)."""

    model_config = ConfigDict(extra="forbid")
    feat_dim: int = Field(128, ge=1, description="embedding dimension")
    nce_k: int = Field(16384, ge=1, description="negatives per sample")
    nce_t: float = Field(0.07, gt=0.0, description="temperature of the critic")
    nce_momentum: float = Field(0.5, ge=0.0, lt=1.0, description="memory bank momentum")
    feature: str = Field("pool", description="feature point read on both models")
    ce_weight: float = Field(1.0, ge=0.0)
    kd_weight: float = Field(0.0, ge=0.0)
    crd_weight: float = Field(0.8, ge=0.0)
    temperature: float = Field(4.0, gt=0.0, description="KD temperature (when kd_weight > 0)")


@torch.no_grad()
def feature_dim(model: nn.Module, point: str, in_channels: int, image_size: int) -> int:
    """Flattened size of ``model``'s feature ``point`` on one probe input (BN stats untouched)."""
    hooks = FeatureHooks(model, [point])
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
        return int(hooks.features[point][0].numel())
    finally:
        hooks.remove()
        model.train(was_training)


@register_distiller("crd")
class CRD(Distiller):
    """Contrastive representation distillation with memory banks (Tian et al. 2020)."""

    Params = CRDParams
    teacher_logits_only = False
    description = "contrastive: student/teacher penultimate embeddings, NCE with memory banks"

    def __init__(self, student, teacher, params, bias, context: DistillerContext) -> None:
        super().__init__(student, teacher, params, bias, context)
        p = params
        m = context.num_samples
        if p.nce_k >= m:
            raise ConfigError(
                f"crd nce_k ({p.nce_k}) must be smaller than the training set ({m} samples): set method.params.nce_k"
            )
        if bias is not None and p.kd_weight <= 0:
            raise ConfigError("crd with method.bias needs a KD term to make bias-aware: set method.params.kd_weight > 0 (e.g. 1.0)")
        assert self.teacher is not None
        dim_s = feature_dim(student, p.feature, context.in_channels, context.image_size)
        dim_t = feature_dim(self.teacher, p.feature, context.in_channels, context.image_size)
        self.embed_student = nn.Linear(dim_s, p.feat_dim)
        self.embed_teacher = nn.Linear(dim_t, p.feat_dim)
        # Banks start uniform in [-σ, σ] with σ = 1/sqrt(D/3) (unit expected norm), as the paper's code.
        g = torch.Generator().manual_seed(context.seed)
        std = 1.0 / math.sqrt(p.feat_dim / 3.0)
        self.register_buffer("memory_student", torch.rand(m, p.feat_dim, generator=g) * 2 * std - std)
        self.register_buffer("memory_teacher", torch.rand(m, p.feat_dim, generator=g) * 2 * std - std)
        # Partition-function constants Z, set from the first batch (-1: not yet set).
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))
        self._hooks_student = FeatureHooks(student, [p.feature])
        self._hooks_teacher = FeatureHooks(self.teacher, [p.feature])

    def _normalised(self, z: Tensor, scores: Tensor) -> Tensor:
        """Divide ``scores`` by ``Z``, setting ``Z = mean(scores) · M`` on the first call.

        Done on the device with ``torch.where`` (no host synchronisation per step). Under
        torchrun the mean is over every process's first batch, so all copies hold the same ``Z``.
        """
        with torch.no_grad():
            estimate = self.context.gather_rows(scores.detach().mean().reshape(1)).mean() * self.context.num_samples
            z.copy_(torch.where(z < 0, estimate.to(z.dtype), z))
        return scores / z

    def contrastive_loss(self, feat_student: Tensor, feat_teacher: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample ``NCE_s + NCE_t`` and the two embeddings; updates both memory banks."""
        p = self.params
        v_s = F.normalize(self.embed_student(feat_student.flatten(1).to(loss_dtype(feat_student))), dim=1)
        v_t = F.normalize(self.embed_teacher(feat_teacher.detach().flatten(1).to(loss_dtype(feat_teacher))), dim=1)
        idx = sample_negatives(indices.to(v_s.device).long(), self.context.num_samples, p.nce_k)
        rows_t = self.memory_teacher[idx]  # (N, 1+K, D): teacher bank for the student side
        rows_s = self.memory_student[idx]
        out_s = self._normalised(self.z_student, contrast_scores(v_s, rows_t, p.nce_t))
        out_t = self._normalised(self.z_teacher, contrast_scores(v_t, rows_s, p.nce_t))
        noise = 1.0 / self.context.num_samples
        loss = nce_loss(out_s, noise) + nce_loss(out_t, noise)
        # under torchrun every rank applies every rank's rows, so the banks stay identical
        gather = self.context.gather_rows
        rows = gather(idx[:, 0])
        momentum_update(self.memory_student, rows, gather(v_s.detach()), p.nce_momentum)
        momentum_update(self.memory_teacher, rows, gather(v_t.detach()), p.nce_momentum)
        return loss, v_s, v_t

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        if batch.indices is None:
            raise RuntimeError("crd needs batch.indices (dataset positions) for its memory banks")
        teacher_logits, t_feats = self.teacher_forward_with_features(batch.images, self._hooks_teacher)
        logits = self.student(batch.images)
        s_feat = self._hooks_student.features[p.feature]
        crd, _, _ = self.contrastive_loss(s_feat, t_feats[p.feature], batch.indices)
        loss, terms, stats = self.logit_distillation(
            logits, teacher_logits, batch.targets, progress,
            partial(kd_kl, temperature=p.temperature), p.temperature, p.ce_weight, p.kd_weight,
        )
        crd_term = p.crd_weight * crd.mean()
        terms["crd"] = crd_term.detach()
        return StepOutput(loss + crd_term, logits, terms, stats)
