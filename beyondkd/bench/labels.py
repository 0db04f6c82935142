"""A table row's label may not claim what its resolved config lacks.

Row labels are what a reader trusts, so a suite whose label says "rectification" for a run
without rectification (or "default" after the default moved) must not run. The claims read
from a label:

==========================  ==================================================================
label says                  the resolved config must have
==========================  ==================================================================
elimination, EBK            the plug-in with ``eliminate``
rectification, RBK          the plug-in with ``rectify``
γ, gamma, dynamic           the plug-in with a dynamic γ (both on, schedule not ``none``)
Ours                        the plug-in resolved to the paper's preset (the paper's method)
default                     the plug-in, with its resolved preset named in the label
a preset name               the plug-in resolved to that preset (or ``custom`` based on it)
none of the plug-in words   no plug-in (a row called "KD" must be plain KD)
==========================  ==================================================================
"""

from __future__ import annotations

import re

from beyondkd.bias.config import BIAS_PRESETS, BiasConfig, describe_bias

_ELIMINATION = re.compile(r"eliminat|\bEBK\b", re.IGNORECASE)
_RECTIFICATION = re.compile(r"rectif|\bRBK\b", re.IGNORECASE)
_GAMMA = re.compile(r"γ|gamma|dynamic", re.IGNORECASE)
_OURS = re.compile(r"\bours\b", re.IGNORECASE)
_DEFAULT = re.compile(r"\bdefault\b", re.IGNORECASE)
# words that say a row uses the plug-in at all
_PLUGIN = re.compile(
    r"plug-?in|btkd|\bours\b|eliminat|rectif|γ|gamma|\bEBK\b|\bRBK\b|bias|custom|wsl|label.prob|toward.label|"
    + "|".join(re.escape(p) for p in BIAS_PRESETS),
    re.IGNORECASE,
)


def _preset_named(label: str) -> list[str]:
    """Preset names that appear in ``label`` as whole words (longest first, so ``rectify-only`` wins)."""
    found = []
    for name in sorted(BIAS_PRESETS, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", label, re.IGNORECASE) and not any(name in f for f in found):
            found.append(name)
    return found


def label_contradictions(label: str, bias: BiasConfig | None, preset: str | None) -> list[str]:
    """What ``label`` claims that the row's resolved plug-in settings (``bias``, from ``preset``) lack."""
    problems: list[str] = []
    if bias is None:
        if _PLUGIN.search(label):
            problems.append("the label names the bias plug-in but the row runs without it")
        return problems
    desc = describe_bias(bias, preset)
    if not _PLUGIN.search(label):
        problems.append(f"the row runs the plug-in ({desc.label}) but its label does not say so")
    if _ELIMINATION.search(label) and not bias.eliminate:
        problems.append("the label claims elimination but the row's plug-in has eliminate: false")
    if _RECTIFICATION.search(label) and not bias.rectify:
        problems.append("the label claims rectification but the row's plug-in has rectify: false")
    dynamic = bias.eliminate and bias.rectify and bias.schedule.name != "none"
    if _GAMMA.search(label) and not dynamic:
        problems.append("the label claims a dynamic γ but the row's plug-in has none")
    if _OURS.search(label) and desc.name != "paper":
        problems.append(f"'Ours' stands for the paper's method but the row's plug-in resolves to {desc.label}")
    if _DEFAULT.search(label) and desc.name.lower() not in label.lower():
        problems.append(f"the label says 'default' without naming the preset it resolves to ({desc.label})")
    for name in _preset_named(label):
        if desc.name != name and not (desc.name == "custom" and desc.based_on == name):
            problems.append(f"the label names preset '{name}' but the row's plug-in resolves to {desc.label}")
    return problems
