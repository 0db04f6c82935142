"""InDistill (Sarridis et al., WACV 2025): a pruning-based, curriculum warm-up before KD.

What is transferred and how (our implementation of the paper's method):

1. **Width matching by pruning.** For each paired intermediate layer the teacher layer's
   convolution filters are ranked by their L1 norm and the ``C_s`` largest are kept (structured
   L1 pruning to the student's width). Because the paper applies the pruned layer to the
   unpruned teacher's input of that layer, its output equals the kept channels of the teacher's
   own feature map; we therefore select those channels from the teacher's feature (exact for
   conv→BN→ReLU→pool layers; for a residual stage the ranking uses the last convolution on the
   stage's main path, the residual sum being channel-wise too). The filter is found as the last
   Conv2d with the teacher feature's width on the main path of the module owning the point,
   or, when that module holds none (VGG's ``stageK`` is the ReLU after the block), by walking
   back in execution order through batch norm, activation and pooling modules to the
   convolution (:func:`~beyondkd.distillers.feature_base.producing_module`).
2. **Direct transfer.** The student's feature map is pulled to the kept teacher channels with
   a mean squared error — no encoder/connector between them (the point of the method).
3. **Curriculum.** Layers are distilled one at a time from the shallowest to the deepest, each
   for its own number of epochs growing with depth (the authors' code: ``3, 4, 5, …``);
   during this warm-up the loss is the feature MSE only (``warmup_ce_weight = 0``).
4. **Then KD.** After the curriculum the student is trained with CE + logit KD (T = 4,
   0.1 / 0.9), which is where the BTKD plug-in acts. (The authors' final stage distils the
   embedding with PKT; we use Hinton KD so the bias plug-in composes.)

Needs ``C_s ≤ C_t`` at every pair (pruning cannot widen a layer). With the default points
(every stage of both models) the pairs are chosen by :meth:`InDistill.pair_default_points`:
the deepest-aligned stages (:func:`~beyondkd.distillers.feature_base.deepest_pairs`), where a
student stage wider than its teacher stage moves on to the next deeper teacher stage wide
enough to be pruned to it (order kept, each teacher stage used once); a student stage with no
such teacher stage left is not distilled in the warm-up. Explicit points are used as given
(a student point wider than its teacher point is a one-line error).
"""

from __future__ import annotations

from itertools import accumulate

import torch
from pydantic import Field
from torch import Tensor, nn

from beyondkd.core import Batch, Progress, StepOutput
from beyondkd.distillers.feature_base import (
    FeatureDistiller,
    FeatureParams,
    as_map,
    deepest_pairs,
    match_spatial,
    probe_shapes,
    producing_module,
)
from beyondkd.distillers.registry import register_distiller
from beyondkd.errors import ConfigError
from beyondkd.losses.indistill import l1_kept_channels, pruned_feature_mse
from beyondkd.losses.kd import cross_entropy


class InDistillParams(FeatureParams):
    """InDistill hyper-parameters.

    Attributes:
        curriculum_epochs: epochs spent on each layer pair, shallowest first; ``None`` =
            ``3, 4, 5, …`` (the authors' schedule). Its sum is the warm-up length.
        feature_weight: weight of the feature MSE during the warm-up.
        warmup_ce_weight: weight of CE during the warm-up (0 in the paper).
        ce_weight, kd_weight: of the KD stage after the warm-up (T = ``temperature``).
    """

    curriculum_epochs: list[int] | None = None
    feature_weight: float = Field(1.0, ge=0.0)
    warmup_ce_weight: float = Field(0.0, ge=0.0)
    ce_weight: float = Field(0.1, ge=0.0)
    kd_weight: float | None = Field(0.9, ge=0.0)


@register_distiller("indistill")
class InDistill(FeatureDistiller):
    """Curriculum distillation of pruned teacher layers, then KD."""

    Params = InDistillParams
    #: default student stages left out of the warm-up by :meth:`pair_default_points` (no teacher stage wide enough)
    unpaired_student_points: tuple[str, ...] = ()
    description = "pruned-teacher intermediate layers, curriculum warm-up, then KD (Sarridis et al.)"

    def default_points(self, model: nn.Module, role: str) -> list[str]:
        return self.stages(model, role)

    def pair_default_points(self, student_points: list[str], teacher_points: list[str]) -> tuple[list[str], list[str]]:
        """Width-aware pairing of the default stages (see the module docstring).

        Starting from :func:`deepest_pairs`, the student stages are visited from the shallowest;
        stage ``i`` (aligned with teacher stage ``a_i``) is paired with the first teacher stage
        ``j ≥ max(a_i, j_prev + 1)`` with ``C_t[j] ≥ C_s[i]``, or left out if there is none. E.g.
        ``resnet32x4`` (64/128/256 channels) → ``shufflenetv2`` (116/232/464): student stage 1 with
        teacher stage 2, student stage 2 with teacher stage 3; student stage 3 is not distilled.
        Drops the pairs, raising a one-line error if none is left.
        """
        assert self.teacher is not None
        c_s = [int(s[0]) for s in probe_shapes(self.student, student_points, self.example_input(self.student))]
        c_t = [int(t[0]) for t in probe_shapes(self.teacher, teacher_points, self.example_input(self.teacher))]
        s_out: list[str] = []
        t_out: list[str] = []
        dropped: list[str] = []
        nxt = 0
        for i, a in deepest_pairs(len(student_points), len(teacher_points)):
            j = next((j for j in range(max(a, nxt), len(teacher_points)) if c_t[j] >= c_s[i]), None)
            if j is None:
                dropped.append(student_points[i])
                continue
            s_out.append(student_points[i])
            t_out.append(teacher_points[j])
            nxt = j + 1
        if not s_out:
            raise ConfigError(
                f"method 'indistill': every student stage is wider than the teacher's stages ({c_s} vs {c_t} channels) "
                "and pruning cannot widen a layer: set method.params.student_points/teacher_points to narrower "
                "student layers (e.g. inside a bottleneck) and wider teacher layers"
            )
        self.unpaired_student_points = tuple(dropped)
        return s_out, t_out

    def build_connectors(self, student_shapes, teacher_shapes) -> None:
        assert self.teacher is not None
        for k, (sp, tp, s, t) in enumerate(zip(self.student_points, self.teacher_points, student_shapes, teacher_shapes)):
            cs, ct = int(s[0]), int(t[0])
            if cs > ct:
                raise ConfigError(
                    f"method 'indistill': student point '{sp}' has {cs} channels but teacher point '{tp}' only {ct}: "
                    "pruning cannot widen a layer; pair narrower student layers with wider teacher layers"
                )
            conv = producing_module(self.teacher, tp, nn.Conv2d, ct, "out_channels", self.example_input(self.teacher))
            if conv is None:
                raise ConfigError(f"method 'indistill': no Conv2d with {ct} output channels produces teacher point '{tp}': choose conv stages")
            self.register_buffer(f"kept{k}", l1_kept_channels(conv.weight, cs))
        epochs = self.params.curriculum_epochs
        if epochs is None:
            epochs = [3 + k for k in range(len(self.student_points))]
        if len(epochs) != len(self.student_points):
            raise ConfigError(
                f"method 'indistill': curriculum_epochs has {len(epochs)} entries for {len(self.student_points)} layer pairs"
            )
        if any(e < 0 for e in epochs):
            raise ConfigError("method 'indistill': curriculum_epochs must be >= 0")
        self.curriculum_epochs = list(epochs)
        self.curriculum_ends = list(accumulate(epochs))

    def kept_channels(self) -> list[Tensor]:
        return [getattr(self, f"kept{k}") for k in range(len(self.student_points))]

    def active_layer(self, epoch: int) -> int | None:
        """Index of the layer pair distilled in ``epoch`` (0-based), ``None`` once the warm-up is over."""
        for k, end in enumerate(self.curriculum_ends):
            if epoch < end:
                return k
        return None

    def layer_loss(self, k: int, student: Tensor, teacher: Tensor) -> Tensor:
        """Per-sample MSE of pair ``k`` ``(N,)``."""
        s, t = match_spatial(as_map(student), as_map(teacher))
        return pruned_feature_mse(s, t, self.kept_channels()[k])

    @property
    def find_unused_parameters(self) -> bool:
        """The warm-up distils one layer pair at a time: the layers after it get no gradient."""
        return True

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        k = self.active_layer(progress.epoch)
        if k is None:  # the KD stage
            teacher_logits = self.teacher_logits(batch)
            logits = self.student(batch.images)
            self.release_features()
            loss, terms, stats = self.logit_terms(logits, teacher_logits, batch, progress,
                                                  self.params.ce_weight, self.effective_kd_weight())
            return StepOutput(loss, logits, terms, stats)
        teacher_logits, t_all = self.teacher_forward_with_features(batch.images, self.teacher_hooks)
        logits = self.student(batch.images)
        s_feat = self.student_hooks.features[self.student_points[k]]
        t_feat = t_all[self.teacher_points[k]]
        self.release_features()
        feat = self.feature_term(lambda s, t: self.params.feature_weight * self.layer_loss(k, s[0], t[0]),
                                 [s_feat], [t_feat], teacher_logits, batch.targets)
        if self.params.warmup_ce_weight > 0:
            ce = self.params.warmup_ce_weight * cross_entropy(logits, batch.targets).mean()
        else:  # no zero-valued CE graph: deeper layers get no gradient (nor weight decay) in the warm-up
            ce = feat.new_zeros(())
        terms = {"ce": ce.detach(), "feat": feat.detach()}
        return StepOutput(ce + feat, logits, terms, {"curriculum_layer": torch.tensor(float(k))})
