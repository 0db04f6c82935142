"""When does the plug-in help? Its gain over KD across regime suites, and the default it implies.

Each plug-in row of a ``regime`` table is compared with its KD baseline (same teacher, same
weights): ``Δ`` is the difference of their best-epoch means and ``σ`` the standard error of that
difference (``sqrt(s²/n + s_b²/n_b)``). Across every regime and weighting:

* a setting **loses** somewhere when ``Δ < -2σ`` there (below KD by more than the seed noise);
* it **wins** somewhere when ``Δ > 2σ`` there;
* the **default preset** is the named preset with the best mean ``Δ`` that loses nowhere
  (issue 12, item 5); a research option becomes a preset only if it wins somewhere and loses
  nowhere (item 10).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from beyondkd.bias.config import BIAS_PRESETS

NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class Comparison:
    """One plug-in row against its KD baseline in one regime.

    Attributes:
        regime: the suite group (a teacher regime).
        setting: the row's resolved plug-in (preset name or ``custom (...)``).
        weights: the method's CE/KD weights, e.g. ``0.1/0.9``.
        label: the row's label.
        delta: best-epoch mean minus the baseline's (points).
        noise: the standard error of ``delta`` (None with fewer than two seeds on a side).
        delta_last: the same for the last epoch.
        teacher_wrong: fraction of the student's training rows the teacher gets wrong.
        seeds: finished seeds of the row and of its baseline.
    """

    regime: str
    setting: str
    weights: str
    label: str
    delta: float
    noise: float | None
    delta_last: float | None
    teacher_wrong: float | None
    seeds: tuple[int, int]

    @property
    def loses(self) -> bool:
        return self.noise is not None and self.delta < -NOISE_SIGMAS * self.noise

    @property
    def wins(self) -> bool:
        return self.noise is not None and self.delta > NOISE_SIGMAS * self.noise


def comparisons(tables: Iterable[dict[str, Any]]) -> list[Comparison]:
    """Every plug-in row with a KD baseline in ``tables`` (outputs of :func:`beyondkd.bench.tables.build_table`)."""
    out: list[Comparison] = []
    for table in tables:
        for g in table["groups"]:
            by_label = {r["label"]: r for r in g["rows"]}
            right = (g.get("teacher_right_on_train_rows") or {}).get("mean")
            for r in g["rows"]:
                if r.get("plugin") is None or r.get("delta_best") is None or not r["baseline"]:
                    continue
                base = by_label.get(r["baseline"][0])
                if base is None or base.get("plugin") is not None:
                    continue
                out.append(Comparison(
                    regime=g["name"], setting=r["plugin"], weights=r.get("weights", "—"), label=r["label"],
                    delta=r["delta_best"], noise=r.get("delta_best_noise"), delta_last=r.get("delta_last"),
                    teacher_wrong=None if right is None else 1.0 - right, seeds=(r["best"]["n"], base["best"]["n"]),
                ))
    return out


@dataclass
class SettingSummary:
    """One plug-in setting over every regime and weighting."""

    setting: str
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def mean_delta(self) -> float:
        return statistics.fmean(c.delta for c in self.comparisons)

    @property
    def wins(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.wins]

    @property
    def losses(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.loses]

    @property
    def is_preset(self) -> bool:
        return self.setting in BIAS_PRESETS


def summarize(comps: Iterable[Comparison]) -> list[SettingSummary]:
    """Per setting, in order of mean Δ (best first)."""
    by: dict[str, SettingSummary] = {}
    for c in comps:
        by.setdefault(c.setting, SettingSummary(c.setting)).comparisons.append(c)
    return sorted(by.values(), key=lambda s: s.mean_delta, reverse=True)


def choose_default(summaries: list[SettingSummary]) -> SettingSummary | None:
    """The named preset with the best mean Δ that is never below KD by more than the noise."""
    return next((s for s in summaries if s.is_preset and not s.losses), None)


def promotable(summaries: list[SettingSummary]) -> list[SettingSummary]:
    """Research settings (not presets) that win somewhere by more than the noise and lose nowhere."""
    return [s for s in summaries if not s.is_preset and s.wins and not s.losses]
