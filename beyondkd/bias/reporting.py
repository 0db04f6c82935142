"""What the plug-in reports to a training engine: its step statistics, epoch figures and summary.

The engine knows no method. A method that routes its logit term through the plug-in hands the
engine the plug-in's statistics through :func:`step_stats`, which declares each one's reduction
over an epoch:

* ``rows``, ``rows_right``, ``rows_rectified``, ``rows_rectified_top_is_label`` are counts and are
  summed (``rows_sl_*`` with ``prefix="rows_sl"`` for SLKD's second plug-in term);
* ``gamma`` is averaged over the epoch's steps and ``gamma_last`` is its value at the last step.

:func:`epoch_fields` adds each count's fraction of the epoch's rows (``frac_right``,
``frac_rectified``, ...); :func:`summary_fields` gives the run summary's ``rows_rectified`` and
``rows_teacher_wrong`` (rows on which the teacher was wrong: what the plug-in eliminated or
rectified). :func:`length_dependence` says whether the plug-in's γ depends on the run's length,
so a resumed run cannot honestly change ``train.epochs``.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from beyondkd.bias.config import BiasConfig
from beyondkd.core import Stat

COUNT_PREFIX = "rows"


def step_stats(parts: Mapping[str, Tensor], prefix: str = COUNT_PREFIX) -> dict[str, Stat]:
    """The statistics among :meth:`BiasPlugin.combine`'s ``parts``, with their reductions.

    Args:
        parts: ``combine``'s second output (its loss terms ``ce``, ``kd_easy``, ``kd_hard`` are
            ignored: they are loss terms, not statistics).
        prefix: the name the row counts are reported under (``rows``, ``rows_right``, ...;
            another prefix replaces ``rows`` in ``rows_<x>``). The total ``rows`` and γ are
            reported only with the default prefix (a second plug-in term counts the same rows).
    """
    out: dict[str, Stat] = {}
    for key, value in parts.items():
        if key.startswith(COUNT_PREFIX + "_") or (key == COUNT_PREFIX and prefix == COUNT_PREFIX):
            out[prefix + key[len(COUNT_PREFIX):]] = Stat(value, "sum")
    if prefix == COUNT_PREFIX and "gamma" in parts:
        out["gamma"] = Stat(parts["gamma"], "mean")
        out["gamma_last"] = Stat(parts["gamma"], "last")
    return out


def epoch_fields(reduced: Mapping[str, float]) -> dict[str, float]:
    """``frac_<x>`` = ``rows_<x> / rows`` for every row count of an epoch (``rows`` > 0)."""
    rows = reduced.get(COUNT_PREFIX)
    if not rows:
        return {}
    return {"frac" + k[len(COUNT_PREFIX):]: float(v) / rows for k, v in reduced.items()
            if k.startswith(COUNT_PREFIX + "_")}


def summary_fields(history: list[dict[str, Any]]) -> dict[str, int]:
    """Rows rectified and rows on which the teacher was wrong, over every epoch of the run."""
    return {
        "rows_rectified": int(sum(r.get("rows_rectified", 0) for r in history)),
        "rows_teacher_wrong": int(sum(r["rows"] - r["rows_right"] for r in history if "rows_right" in r)),
    }


def length_dependence(config: BiasConfig | None) -> str | None:
    """Why the plug-in's behaviour depends on the run's length (``None`` when it does not).

    γ follows the fraction of training done (or of epochs) unless there is no dynamic
    weighting, or the schedule is a constant without warm-up.
    """
    if config is None or not (config.eliminate and config.rectify):
        return None
    schedule = config.schedule
    if schedule.name == "none" or (schedule.name == "constant" and schedule.warmup == 0):
        return None
    return f"the plug-in's γ schedule ({schedule.name}) follows the fraction of training done"
