"""Settings of the bias plug-in, its named presets, and the name a resolved setting goes by.

:class:`BiasConfig` holds every research option of the plug-in; :data:`BIAS_PRESETS` names the
sets that the paper, the authors' code and our measurements stand for. A run records the
*resolved* settings (every field) together with the preset they came from, so a table can say
exactly what ran: :func:`describe_bias` gives the preset a setting equals, or ``custom`` with
the fields that differ from the preset it was based on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from beyondkd.bias.rectify import RectifyVariant
from beyondkd.bias.schedule import GammaSchedule, schedule_names
from beyondkd.errors import ConfigError, suggest

Reduction = Literal["batch", "subbatch"]
RowWeight = Literal["none", "label_prob", "wsl"]


class ScheduleConfig(BaseModel):
    """Validated settings of a :class:`GammaSchedule` (``schedule: linear`` is shorthand)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "linear"
    per: Literal["step", "epoch"] = "step"
    value: float = Field(0.5, ge=0.0, le=1.0)
    cap: float = Field(1.0, ge=0.0, le=1.0)
    warmup: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("name")
    @classmethod
    def _known_shape(cls, v: str) -> str:
        if v not in schedule_names():
            raise ValueError(f"unknown gamma schedule '{v}'{suggest(v, schedule_names())}: choose one of {', '.join(schedule_names())}")
        return v

    def build(self) -> GammaSchedule:
        return GammaSchedule(**self.model_dump())


class BiasConfig(BaseModel):
    """Settings of the bias plug-in. Every field is a research option; presets name the sets.

    Attributes:
        eliminate: split right and wrong rows (bias elimination).
        rectify: rectify the teacher's wrong rows (bias rectification).
        variant: rectification rule, see :mod:`beyondkd.bias.rectify`.
        smoothing: ``eps`` of the ``label_smooth`` variant.
        space: ``probs`` rectifies ``softmax(z/T)`` (the paper); ``logits`` applies eq. 4–7 to
            the raw logits like one version of the authors' code (guarded; ``paper`` variant only).
        rectify_temperature: the temperature of the distribution that is rectified; ``None``
            (the paper) rectifies at the method's distillation temperature, ``1.0`` rectifies
            the teacher's own prediction ``softmax(z)`` and lets the method soften the result.
        schedule: the γ schedule (eq. 9).
        reduction: ``batch`` or ``subbatch`` (see :mod:`beyondkd.bias.loss`).
        ce_under_gamma: multiply CE by ``(1-γ)`` as eq. 9 does.
        row_weight: a per-row weight of the distillation term (research options, not in BTKD):
            ``label_prob`` weighs row *i* by the teacher's probability of its label
            ``softmax(z_i)[y_i]``; ``wsl`` by ``1 - exp(-CE_s,i / CE_t,i)``, the weighted soft
            labels of Zhou et al. (ICLR 2021), from the student's and the teacher's cross-entropy
            with the label at ``T = 1`` (both detached).
    """

    model_config = ConfigDict(extra="forbid")
    eliminate: bool = True
    rectify: bool = True
    variant: RectifyVariant = "paper"
    smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    space: Literal["probs", "logits"] = "probs"
    rectify_temperature: float | None = Field(None, gt=0.0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    reduction: Reduction = "batch"
    ce_under_gamma: bool = True
    row_weight: RowWeight = "none"

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v


# Named presets of the plug-in alone (the method's temperature and weights live in the method).
BIAS_PRESETS: dict[str, dict[str, Any]] = {
    # BTKD as written: eq. 4-7 on probabilities, γ = e/E per iteration, CE inside (1-γ).
    "paper": dict(variant="paper", schedule={"name": "linear", "per": "step"}),
    # What the authors' public code does (see shared/papers/README.md item 2).
    "official-code": dict(
        variant="swap",
        schedule={"name": "sin2", "per": "epoch"},
        reduction="subbatch",
        ce_under_gamma=False,
    ),
    # Elimination + rectification with constant weights (no dynamic γ).
    "constant": dict(variant="paper", schedule={"name": "none"}),
    # As "constant" but the rectified row always has the label on top.
    "strict": dict(variant="strict", schedule={"name": "none"}),
    # Table 5 ablation rows.
    "eliminate-only": dict(eliminate=True, rectify=False, schedule={"name": "none"}),
    "rectify-only": dict(eliminate=False, rectify=True, schedule={"name": "none"}),
}

# The preset a bare ``BiasAwareKD()`` / ``bias: {}`` uses, chosen by the rule of issue 12 over the
# regime suites (BENCHMARKS.md, "regime-evidence"; `python -m benchmarks.regimes`): the named preset
# with the best mean gain over KD that is never below KD by more than 2σ in any regime. Over 5
# teacher regimes x 2 CE/KD weightings on Fashion-MNIST, `constant` had mean Δ +0.31 (5 wins, no
# loss), `strict` +0.30, `eliminate-only` +0.07 (no win); `paper` and `official-code` lost in 4 and 6.
DEFAULT_BIAS_PRESET = "constant"


def default_bias_preset() -> str:
    """The preset that ``bias: {}`` resolves to (read at call time, so it can be patched in tests)."""
    return DEFAULT_BIAS_PRESET


def bias_config(preset: str | None = None, **overrides: object) -> BiasConfig:
    """A validated :class:`BiasConfig` from a preset name plus field overrides."""
    preset = default_bias_preset() if preset is None else preset
    if preset not in BIAS_PRESETS:
        raise ConfigError(
            f"unknown bias preset '{preset}'{suggest(preset, list(BIAS_PRESETS))}: "
            f"choose one of {', '.join(BIAS_PRESETS)}"
        )
    return BiasConfig(**{**BIAS_PRESETS[preset], **overrides})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(config: BiasConfig, reference: BiasConfig) -> dict[str, Any]:
    """The fields (dotted, e.g. ``schedule.name``) where ``config`` differs from ``reference``, with ``config``'s values."""
    mine, theirs = _flat(config.model_dump()), _flat(reference.model_dump())
    return {k: v for k, v in mine.items() if theirs.get(k) != v}


def _effective(config: BiasConfig) -> dict[str, Any]:
    """The fields that change what the plug-in computes (ignoring options that are switched off)."""
    d = _flat(config.model_dump())
    if not config.eliminate:  # one term over all rows: how sets would be reduced does not matter
        d.pop("reduction")
    if not config.rectify:
        for k in ("variant", "smoothing", "space", "rectify_temperature"):
            d.pop(k)
    elif config.variant != "label_smooth":
        d.pop("smoothing")
    dynamic = config.eliminate and config.rectify and config.schedule.name != "none"
    if not dynamic:
        for k in [k for k in d if k.startswith("schedule.")] + ["ce_under_gamma"]:
            d.pop(k)
        d["schedule.name"] = "none"
    return d


def equivalent(a: BiasConfig, b: BiasConfig) -> bool:
    """True when two settings make the plug-in compute the same thing (inactive options ignored)."""
    return _effective(a) == _effective(b)


@dataclass(frozen=True)
class BiasDescription:
    """What a resolved plug-in setting is called.

    Attributes:
        name: the preset it is equivalent to, or ``custom``.
        based_on: the preset it was built from (``preset:`` in the config, or the default).
        differs: for ``custom``, the fields that differ from ``based_on`` (dotted names).
    """

    name: str
    based_on: str
    differs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``eliminate-only``, or ``custom (paper + variant=strict)``."""
        if self.name != "custom":
            return self.name
        diffs = ", ".join(f"{k}={v}" for k, v in self.differs.items())
        return f"custom ({self.based_on} + {diffs})" if diffs else f"custom ({self.based_on})"


def describe_bias(config: BiasConfig, based_on: str | None = None) -> BiasDescription:
    """Name a resolved setting: the preset it is equivalent to (``based_on`` first), else ``custom``."""
    based_on = default_bias_preset() if based_on is None else based_on
    candidates = [based_on] + [p for p in BIAS_PRESETS if p != based_on]
    for name in candidates:
        if name in BIAS_PRESETS and equivalent(config, bias_config(name)):
            return BiasDescription(name, based_on)
    reference = bias_config(based_on) if based_on in BIAS_PRESETS else BiasConfig()
    return BiasDescription("custom", based_on, config_differences(config, reference))


def resolve_bias(raw: dict[str, Any] | None) -> tuple[BiasConfig, str] | None:
    """``method.bias`` of a config -> (settings, the preset they came from); None without the plug-in.

    Raises pydantic's ``ValidationError`` for bad fields (callers turn it into one line).
    """
    if raw is None:
        return None
    fields = dict(raw)
    preset = fields.pop("preset", None)
    preset = default_bias_preset() if preset is None else preset
    return bias_config(preset, **fields), preset


def bias_record(config: BiasConfig, preset: str) -> dict[str, Any]:
    """What a run records about its plug-in: the preset, its resolved name and every field."""
    desc = describe_bias(config, preset)
    return {"preset": preset, "resolved": desc.name, "label": desc.label, "differs": desc.differs,
            "settings": config.model_dump(mode="json")}
