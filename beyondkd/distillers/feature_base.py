"""Shared machinery of the feature-based methods (FitNet, AT, SP, RKD, OFD, ReviewKD, InDistill).

A :class:`FeatureDistiller`:

1. resolves its *feature points* — ``params.student_points`` / ``params.teacher_points`` or,
   when unset, the method's defaults expressed with the semantic names of the model registry
   spec (``stage1..K``, ``pool``, ``preact_stageK``; found on the built model for ``timm:`` and
   ``torchvision:`` models); any module path (``layer2``, ``layer2.1.relu:in``) works too. When
   both lists are defaults of different lengths (a 4-stage teacher, a 3-stage student), the
   deepest ``min(k_s, k_t)`` of each are paired (:meth:`FeatureDistiller.pair_default_points`);
   explicit lists must have equal lengths;
2. registers :class:`~beyondkd.models.features.FeatureHooks` on student and teacher;
3. probes the feature shapes **once** with a dummy forward (``DistillerContext.image_size``,
   ``in_channels``; eval mode, no gradient) and lets the method build its connectors from them.
   Connectors are ``nn.Module`` attributes, hence trained in the default ``student`` parameter
   group and saved by ``checkpoint_state``;
4. per step: ``CE + feature term`` (+ an optional logit KD term). With the BTKD plug-in the
   logit term is the plug-in's bias-aware KD (elimination / rectification, weighted by γ),
   added beside the feature term through :meth:`Distiller.logit_distillation` — the way BTKD's
   Table 6 combines its method with feature-based methods. The feature term itself is not
   split by the plug-in; ``params.kd_weight`` without the plug-in gives the same logit term
   without elimination or rectification ("X + KD", the control of "X + plug-in");
5. optionally (``params.feature_rows``), per-sample feature terms are restricted to the rows the
   teacher gets right (the plug-in's elimination mask) or weighted by the teacher's probability
   of the label. Batch-relational losses (SP, RKD) have no per-row value and refuse the option.

The teacher's features are read on every step, so ``teacher_logits_only = False`` (no cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from beyondkd.bias.mask import teacher_right_mask
from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers.base import Distiller, DistillerContext, StepOutput
from beyondkd.errors import ConfigError
from beyondkd.losses.kd import cross_entropy, kd_kl
from beyondkd.models.features import FeatureHooks, resolve_feature_point


FeatureRows = Literal["all", "right", "label_prob"]
#: ``loss(student_feats, teacher_feats) -> (N,)``: a method's weighted per-sample feature term
FeatureLoss = Callable[[list[Tensor], list[Tensor]], Tensor]


class FeatureParams(BaseModel):
    """Hyper-parameters shared by every feature method.

    Attributes:
        student_points: feature points of the student (semantic names or module paths);
            ``None`` = the method's default for the architecture.
        teacher_points: the teacher's, paired one-to-one with ``student_points``.
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the logit KD term ``T²·KL``; ``None`` = 0 for the method alone and
            0.9 (the field's KD weight) when the BTKD plug-in is on.
        temperature: temperature of the logit term (and of the plug-in's rectification).
        feature_rows: the rows the feature term learns from: ``all`` (the method as published);
            ``right``, only the rows whose teacher top-1 is the label (the plug-in's elimination
            mask, with or without the plug-in: the other rows contribute exactly nothing, and
            their features never reach the connectors); ``label_prob``, every row weighted by the
            teacher's probability of its label at ``T = 1`` (detached). Both keep the batch mean
            (sums divided by the batch size). Only for methods with per-sample feature losses.
    """

    model_config = ConfigDict(extra="forbid")
    student_points: list[str] | None = None
    teacher_points: list[str] | None = None
    ce_weight: float = Field(1.0, ge=0.0)
    kd_weight: float | None = Field(None, ge=0.0)
    temperature: float = Field(4.0, gt=0.0)
    feature_rows: FeatureRows = "all"


def stage_names(model: nn.Module) -> list[str]:
    """Semantic ``stageK`` names of a registered model, in order (empty without a spec)."""
    spec = getattr(model, "beyondkd_spec", None)
    if spec is None:
        return []
    names = [n for n in spec.feature_points if n.startswith("stage") and n[5:].isdigit()]
    return sorted(names, key=lambda n: int(n[5:]))


def has_point(model: nn.Module, name: str) -> bool:
    spec = getattr(model, "beyondkd_spec", None)
    return spec is not None and name in spec.feature_points


def match_spatial(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two ``(N, C, H, W)`` maps to the other's size (no-op if equal)."""
    if student.dim() != 4 or student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
    if tuple(student.shape[2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


def as_map(x: Tensor) -> Tensor:
    """``(N, D)`` -> ``(N, D, 1, 1)``; 4-d tensors unchanged."""
    return x.reshape(x.shape[0], -1, 1, 1) if x.dim() == 2 else x


class ConnectorBatchNorm2d(nn.BatchNorm2d):
    """Batch norm of connectors that accepts a single value per channel.

    In training mode, a batch of one ``1×1`` map (e.g. a pooled embedding with batch size 1)
    has no variance to normalise by; such a batch uses the running statistics instead of
    raising, and leaves them unchanged. Otherwise identical to ``nn.BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def deepest_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of the deepest ``min(n_student, n_teacher)`` points of each list, in order.

    Lists of equal length pair one-to-one; otherwise the shallowest extra points of the longer
    list are left out, as the field does for models with different numbers of stages (e.g.
    ``resnet50_cifar``'s 4 stages with ``shufflenetv1``'s 3: teacher stages 2–4 with student
    stages 1–3).
    """
    k = min(n_student, n_teacher)
    return [(n_student - k + m, n_teacher - k + m) for m in range(k)]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, restoring its previous mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def probe_shapes(model: nn.Module, points: Sequence[str], example: Tensor) -> list[torch.Size]:
    """Shapes (without the batch dimension) of ``points`` on one forward of ``example`` (eval, no grad)."""
    hooks = FeatureHooks(model, list(points))
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
        return [hooks.features[p].shape[1:] for p in points]
    finally:
        hooks.remove()


#: modules that keep the channel of every value (elementwise or per-channel spatial ops): the
#: producing-module search of :func:`producing_module` passes through them
CHANNEL_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)

#: path components of shortcut branches, which the producing-module search skips
SHORTCUT_NAMES = frozenset({"downsample", "shortcut"})


def modules_run_before(model: nn.Module, point: str, example: Tensor,
                       kind: type[nn.Module] = nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the modules that ran before feature ``point``, in execution order.

    One forward of ``example`` (eval mode, no gradient) is traced with hooks on every leaf
    module and every ``kind`` module (so a ``kind`` subclass with children, e.g. a batch norm
    fused with its activation, is seen too); a module called twice appears twice. The list
    stops at the point's last occurrence (the input of ``path:in`` is taken before that module
    runs, a module's output after it); empty if the point is never reached.
    """
    path = resolve_feature_point(model, point)
    module_path, _, which = path.partition(":")
    target = model.get_submodule(module_path)
    order: list[tuple[str, nn.Module] | None] = []  # None marks the point
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: order.append((name, mod)))
        for name, m in model.named_modules()
        if isinstance(m, kind) or not any(True for _ in m.children())
    ]
    if which == "in":
        handles.append(target.register_forward_pre_hook(lambda mod, i: order.append(None)))
    else:
        handles.append(target.register_forward_hook(lambda mod, i, o: order.append(None)))
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if None not in order:
        return []
    last = len(order) - 1 - order[::-1].index(None)
    return [entry for entry in order[:last] if entry is not None]


def producing_module(model: nn.Module, point: str, kind: type[nn.Module], channels: int, attr: str,
                     example: Tensor) -> nn.Module | None:
    """The ``kind`` module with ``channels`` channels whose output becomes feature ``point``.

    Walks back in execution order (:func:`modules_run_before`) from the point: modules on a
    shortcut branch (a path component in :data:`SHORTCUT_NAMES`) are skipped, since the feature
    comes from the main path; :data:`CHANNEL_PRESERVING` modules (batch norm, activations,
    pooling, dropout) are passed through. The first ``kind`` module met is returned if it has
    ``channels`` channels; ``None`` if it has another width or any other module comes first —
    e.g. VGG's ``preact_stage3`` (``relu3:in``) gives block 3's last batch norm for
    ``kind=nn.BatchNorm2d`` and block 3's last convolution for ``kind=nn.Conv2d``. Functional
    operations between modules (``+``, ``torch.cat`` in a ``forward``) are invisible to the trace.
    """
    for name, m in reversed(modules_run_before(model, point, example, kind)):
        if SHORTCUT_NAMES.intersection(name.split(".")):
            continue
        if isinstance(m, kind):
            return m if getattr(m, attr) == channels else None
        if not isinstance(m, CHANNEL_PRESERVING):
            return None
    return None


class FeatureDistiller(Distiller):
    """Base class of the feature methods (see the module docstring).

    Subclasses set ``Params`` (a :class:`FeatureParams` subclass), implement
    :meth:`default_points`, :meth:`build_connectors` and :meth:`feature_loss`.
    """

    Params: ClassVar[type[BaseModel]] = FeatureParams
    teacher_logits_only: ClassVar[bool] = False
    #: the field's KD weight used for the logit term when the plug-in is on and kd_weight is unset
    PLUGIN_KD_WEIGHT: ClassVar[float] = 0.9
    #: False for batch-relational losses (a row's value depends on the other rows): no feature_rows
    per_sample_feature_loss: ClassVar[bool] = True
    #: ranks of the per-sample features the method reads: 3 = ``(C, H, W)`` maps, 1 = ``(D,)``
    #: vectors (2 = ``(L, D)`` tokens of a transformer, for methods that only flatten)
    FEATURE_RANKS: ClassVar[tuple[int, ...]] = (1, 3)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: BaseModel, bias, context: DistillerContext) -> None:
        super().__init__(student, teacher, params, bias, context)
        if self.teacher is None:
            raise ConfigError(f"method '{self.name}' needs a teacher: add a 'teacher:' section with a checkpoint")
        p = self.params
        if p.feature_rows != "all" and not self.per_sample_feature_loss:
            raise ConfigError(
                f"method '{self.name}' compares relations between the rows of a batch, so its feature term has no "
                f"per-row value to select or weight: remove method.params.feature_rows (docs/methods-feature.md)"
            )
        self.student_points = list(p.student_points) if p.student_points is not None else self.default_points(student, "student")
        self.teacher_points = list(p.teacher_points) if p.teacher_points is not None else self.default_points(self.teacher, "teacher")
        if p.student_points is None and p.teacher_points is None:
            self.student_points, self.teacher_points = self.pair_default_points(self.student_points, self.teacher_points)
        if len(self.student_points) != len(self.teacher_points):
            raise ConfigError(
                f"method '{self.name}': {len(self.student_points)} student_points but {len(self.teacher_points)} "
                "teacher_points: give the same number (they are paired in order)"
            )
        if not self.student_points:
            raise ConfigError(f"method '{self.name}' needs at least one feature point: set params.student_points and teacher_points")
        self.student_hooks = FeatureHooks(student, self.student_points)
        self.teacher_hooks = FeatureHooks(self.teacher, self.teacher_points)
        s_shapes, t_shapes = self._probe_shapes()
        self._check_ranks("student", self.student_points, s_shapes)
        self._check_ranks("teacher", self.teacher_points, t_shapes)
        self.student_shapes, self.teacher_shapes = s_shapes, t_shapes
        self.build_connectors(s_shapes, t_shapes)

    # -- to implement ----------------------------------------------------------------------------
    def default_points(self, model: nn.Module, role: str) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def build_connectors(self, student_shapes: list[torch.Size], teacher_shapes: list[torch.Size]) -> None:
        """Create connector modules from the probed shapes (``(C, H, W)`` or ``(D,)``); none by default."""

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor], progress: Progress) -> Tensor:  # pragma: no cover
        """The weighted per-sample feature term ``(N,)``."""
        raise NotImplementedError

    def pair_default_points(self, student_points: list[str], teacher_points: list[str]) -> tuple[list[str], list[str]]:
        """Pair the two default point lists (only called when the user gave neither).

        Default: :func:`deepest_pairs` — lists of different lengths (a 4-stage teacher and a
        3-stage student) keep the deepest ``min(k_s, k_t)`` points of each, paired in order.
        """
        pairs = deepest_pairs(len(student_points), len(teacher_points))
        return [student_points[i] for i, _ in pairs], [teacher_points[j] for _, j in pairs]

    # -- helpers -------------------------------------------------------------------------------
    def require_points(self, model: nn.Module, role: str, names: Sequence[str]) -> list[str]:
        """``names`` if the model's spec defines them all, else a one-line error asking for points."""
        missing = [n for n in names if not has_point(model, n)]
        if missing or not names:
            what = type(model).__name__
            raise ConfigError(
                f"method '{self.name}': the {role} ({what}) has no feature point "
                f"{missing[0] if missing else 'stage1'!r} in its model spec: set method.params.{role}_points "
                "to module names (e.g. [layer2] or [layer2.1.relu:in])"
            )
        return list(names)

    def stages(self, model: nn.Module, role: str) -> list[str]:
        names = stage_names(model)
        return self.require_points(model, role, names)

    def example_input(self, model: nn.Module) -> Tensor:
        """The dummy batch of the shape probes: zeros ``(2, in_channels, image_size, image_size)``."""
        c = self.context
        return torch.zeros(2, c.in_channels, c.image_size, c.image_size, device=next(model.parameters()).device)

    def _probe_shapes(self) -> tuple[list[torch.Size], list[torch.Size]]:
        assert self.teacher is not None
        with eval_mode(self.student), eval_mode(self.teacher), torch.no_grad():
            self.student(self.example_input(self.student))
            self.teacher(self.example_input(self.teacher))
        s = [self.student_hooks.features[n].shape[1:] for n in self.student_points]
        t = [self.teacher_hooks.features[n].shape[1:] for n in self.teacher_points]
        self.student_hooks.features.clear()
        self.teacher_hooks.features.clear()
        return s, t

    def _check_ranks(self, role: str, points: list[str], shapes: list[torch.Size]) -> None:
        for point, shape in zip(points, shapes):
            if len(shape) not in self.FEATURE_RANKS:
                kinds = {1: "(N, D) vectors", 2: "(N, L, D) tokens", 3: "(N, C, H, W) maps"}
                raise ConfigError(
                    f"method '{self.name}' reads {' or '.join(kinds[r] for r in self.FEATURE_RANKS)}, but {role} point "
                    f"'{point}' has shape (N, {', '.join(map(str, shape))}): set method.params.{role}_points to other points"
                )

    def release_features(self) -> None:
        """Drop the hooks' references to this step's tensors (the loss keeps what it needs)."""
        self.student_hooks.features.clear()
        self.teacher_hooks.features.clear()

    def effective_kd_weight(self) -> float:
        kd = self.params.kd_weight
        if kd is None:
            return self.PLUGIN_KD_WEIGHT if self.bias is not None else 0.0
        return kd

    def logit_terms(self, logits: Tensor, teacher_logits: Tensor, batch: Batch, progress: Progress,
                    ce_weight: float, kd_weight: float) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """CE (+ logit KD, through the plug-in when it is on)."""
        ce = cross_entropy(logits, batch.targets)
        if self.bias is None and kd_weight == 0.0:
            term = ce_weight * ce.mean()
            return term, {"ce": term.detach()}, {}
        t = self.params.temperature
        return self.logit_distillation(logits, teacher_logits, batch.targets, progress,
                                       partial(kd_kl, temperature=t), t, ce_weight, kd_weight, ce=ce)

    def feature_term(self, loss: FeatureLoss, student_feats: list[Tensor], teacher_feats: list[Tensor],
                     teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """The scalar feature term: ``loss`` ``(N,)`` averaged over the batch, over the rows of ``feature_rows``.

        ``right`` computes ``loss`` on the rows the teacher gets right only (so the wrong rows never
        enter a connector or its batch norm) and divides the sum by the batch size ``N``; when the
        teacher is wrong on every row the term is ``0 ×`` the loss over all rows, so every
        connector still gets a (zero) gradient, as multi-GPU gradient averaging needs.
        ``label_prob`` is ``Σ_i p_i loss_i / N`` with ``p_i = softmax(z_i)[y_i]`` of the teacher.
        """
        rows = self.params.feature_rows
        n = student_feats[0].shape[0]
        if rows == "all":
            return loss(student_feats, teacher_feats).mean()
        if rows == "label_prob":
            probs = torch.softmax(teacher_logits.detach().float(), dim=1)
            weight = probs.gather(1, targets.long().view(-1, 1)).squeeze(1)
            values = loss(student_feats, teacher_feats)
            return (weight.to(values.dtype) * values).sum() / n
        keep = teacher_right_mask(teacher_logits, targets).nonzero().squeeze(1)
        if keep.numel() == 0:
            return 0.0 * loss(student_feats, teacher_feats).sum()
        pick = [s.index_select(0, keep) for s in student_feats], [t.index_select(0, keep) for t in teacher_feats]
        return loss(*pick).sum() / n

    # -- the contract ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        teacher_logits, t_all = self.teacher_forward_with_features(batch.images, self.teacher_hooks)
        logits = self.student(batch.images)
        s_feats = [self.student_hooks.features[n] for n in self.student_points]
        t_feats = [t_all[n] for n in self.teacher_points]
        self.release_features()
        feat = self.feature_term(partial(self.feature_loss, progress=progress), s_feats, t_feats,
                                 teacher_logits, batch.targets)
        loss, terms, stats = self.logit_terms(logits, teacher_logits, batch, progress,
                                              self.params.ce_weight, self.effective_kd_weight())
        terms["feat"] = feat.detach()
        return StepOutput(loss + feat, logits, terms, stats)
